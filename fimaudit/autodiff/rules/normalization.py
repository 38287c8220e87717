"""Gradient rules of normalization layers: LayerNormalization (opset 17).

With xhat = (x - mean) r, r = 1 / sqrt(var + eps) over the normalized axes (``axis`` to the
end) and y = xhat * scale + bias, the Jacobian of xhat is symmetric:

    d xhat = r (dx - mean(dx) - xhat mean(xhat dx)),

so the VJP applies it to g * scale and the JVP applies it to t, then multiplies by scale.
mean, var, r and xhat are recomputed from the forward input in the gradient graph.
"""

from __future__ import annotations

from typing import Sequence

import onnx

from fimaudit.autodiff.context import RuleContext, attribute
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError


def _layer_norm_check(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None] | None = None) -> None:
    if any(ctx.needs_gradient(name) for name in node.input[1:]):
        raise UnsupportedOpError(
            f"LayerNormalization node {node.name!r}: scale or bias computed from the input is not supported",
            ["LayerNormalization"],
        )
    if grads is not None and any(g is not None for g in grads[1:]):
        raise UnsupportedOpError(
            f"LayerNormalization node {node.name!r}: its Mean/InvStdDev outputs feed the logits; "
            "only the normalized output is differentiated",
            ["LayerNormalization"],
        )


def _normalized_axes(ctx: RuleContext, node: onnx.NodeProto) -> list[int]:
    """Axes of the gradient tensor (lead axis included) that the layer normalizes over."""
    x = node.input[0]
    rank = ctx.require_rank(x, node)
    axis = ctx.normalize_axis(int(attribute(node, "axis", -1)), rank)  # type: ignore[arg-type]
    return [a + 1 for a in range(axis, rank)]


def _statistics(ctx: RuleContext, node: onnx.NodeProto) -> tuple[str, str, list[int]]:
    """(r, xhat, gradient axes) recomputed from the forward input."""
    x = node.input[0]
    axes = _normalized_axes(ctx, node)
    forward_axes = [a - 1 for a in axes]
    epsilon = float(attribute(node, "epsilon", 1e-5))  # type: ignore[arg-type]
    mean = ctx.reduce("ReduceMean", x, forward_axes, keepdims=True)
    centred = ctx.emit("Sub", [x, mean])
    variance = ctx.reduce("ReduceMean", ctx.emit("Mul", [centred, centred]), forward_axes, keepdims=True)
    inverse_std = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [variance, ctx.scalar(epsilon, like=x)])])])
    return inverse_std, ctx.emit("Mul", [centred, inverse_std]), axes


def _normalize_jacobian(ctx: RuleContext, node: onnx.NodeProto, gradient: str) -> str:
    """r (v - mean(v) - xhat mean(xhat v)) over the normalized axes (symmetric in v)."""
    inverse_std, normalized, axes = _statistics(ctx, node)
    mean = ctx.reduce("ReduceMean", gradient, axes, keepdims=True)
    projection = ctx.reduce("ReduceMean", ctx.emit("Mul", [gradient, normalized]), axes, keepdims=True)
    centred = ctx.emit("Sub", [ctx.emit("Sub", [gradient, mean]), ctx.emit("Mul", [normalized, projection])])
    return ctx.emit("Mul", [centred, inverse_std])


@vjp_rule("LayerNormalization")
def layer_normalization_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = r (h - mean(h) - xhat mean(xhat h)) with h = g * scale."""
    _layer_norm_check(ctx, node, grads)
    scaled = ctx.emit("Mul", [grads[0], node.input[1]])  # type: ignore[list-item]
    return [_normalize_jacobian(ctx, node, scaled)]


@jvp_rule("LayerNormalization")
def layer_normalization_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_y = scale * r (t - mean(t) - xhat mean(xhat t)); Mean/InvStdDev outputs get no tangent."""
    _layer_norm_check(ctx, node)
    return [ctx.emit("Mul", [_normalize_jacobian(ctx, node, tangents[0]), node.input[1]])]  # type: ignore[arg-type]
