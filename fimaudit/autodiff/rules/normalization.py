"""Gradient rules of normalization layers.

LayerNormalization (opset 17), InstanceNormalization, GroupNormalization (opset 18: scale/bias
per group; opset 21: per channel), MeanVarianceNormalization, LpNormalization (p = 1, 2).

With xhat = (x - mean) r, r = 1 / sqrt(var + eps) over the normalized axes (``axis`` to the
end) and y = xhat * scale + bias, the Jacobian of xhat is symmetric:

    d xhat = r (dx - mean(dx) - xhat mean(xhat dx)),

so the VJP applies it to g * scale and the JVP applies it to t, then multiplies by scale.
mean, var, r and xhat are recomputed from the forward input in the gradient graph.

Every standardization here is that map over some axes (InstanceNormalization: the spatial axes;
GroupNormalization: each group of channels, through a reshape to [N, G, -1]). MeanVariance-
Normalization divides by sqrt(var) + 1e-9 (its function body) instead of sqrt(var + eps): with
D that denominator and S = sqrt(var), d xhat = (1/D)(dx - mean(dx) - (D/S) xhat mean(xhat dx)),
still symmetric. LpNormalization y = x / n, n = ||x||_p along ``axis``: J = (I - y s^T) / n with
s = y (p = 2) or sign(x) (p = 1), not symmetric, so the VJP uses J^T.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from fimaudit.autodiff.context import RuleContext
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import REQUIRED, float_attribute, int_attribute, ints_attribute


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
    axis = ctx.normalize_axis(int_attribute(node, "axis", -1), rank)
    return [a + 1 for a in range(axis, rank)]


def _statistics(ctx: RuleContext, node: onnx.NodeProto) -> tuple[str, str, list[int]]:
    """(r, xhat, gradient axes) recomputed from the forward input."""
    x = node.input[0]
    axes = _normalized_axes(ctx, node)
    forward_axes = [a - 1 for a in axes]
    epsilon = float_attribute(node, "epsilon", 1e-5)
    mean = ctx.reduce("ReduceMean", x, forward_axes, keepdims=True)
    centred = ctx.emit("Sub", [x, mean])
    variance = ctx.reduce("ReduceMean", ctx.emit("Mul", [centred, centred]), forward_axes, keepdims=True)
    inverse_std = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [variance, ctx.scalar(epsilon, like=x)])])])
    return inverse_std, ctx.emit("Mul", [centred, inverse_std]), axes


def _normalize_jacobian(ctx: RuleContext, node: onnx.NodeProto, gradient: str) -> str:
    """R (v - mean(v) - xhat mean(xhat v)) over the normalized axes (symmetric in v)."""
    inverse_std, normalized, axes = _statistics(ctx, node)
    return _standardize_jacobian(ctx, gradient, inverse_std, normalized, axes)


def _standardize_jacobian(
    ctx: RuleContext, gradient: str, inverse_std: str, normalized: str, axes: list[int], ratio: str | None = None
) -> str:
    """(1/D) (v - mean(v) - k xhat mean(xhat v)) over gradient ``axes``; k = ``ratio`` (D/S) or 1."""
    mean = ctx.reduce("ReduceMean", gradient, axes, keepdims=True)
    projection = ctx.reduce("ReduceMean", ctx.emit("Mul", [gradient, normalized]), axes, keepdims=True)
    if ratio is not None:
        projection = ctx.emit("Mul", [projection, ratio])
    centred = ctx.emit("Sub", [ctx.emit("Sub", [gradient, mean]), ctx.emit("Mul", [normalized, projection])])
    return ctx.emit("Mul", [centred, inverse_std])


def _standardize(ctx: RuleContext, x: str, forward_axes: list[int], epsilon: float) -> tuple[str, str]:
    """(1 / sqrt(var + eps), xhat) of forward ``x`` over ``forward_axes`` (keepdims)."""
    mean = ctx.reduce("ReduceMean", x, forward_axes, keepdims=True)
    centred = ctx.emit("Sub", [x, mean])
    variance = ctx.reduce("ReduceMean", ctx.emit("Mul", [centred, centred]), forward_axes, keepdims=True)
    inverse_std = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [variance, ctx.scalar(epsilon, like=x)])])])
    return inverse_std, ctx.emit("Mul", [centred, inverse_std])


def _weights_only(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None] | None = None) -> None:
    """Refuse scale/bias on the differentiable path and extra outputs that carry a cotangent."""
    if any(ctx.needs_gradient(name) for name in node.input[1:]):
        raise UnsupportedOpError(
            f"{node.op_type} node {node.name!r}: scale or bias computed from the input is not supported", [node.op_type]
        )
    if grads is not None and any(g is not None for g in grads[1:]):
        raise UnsupportedOpError(
            f"{node.op_type} node {node.name!r}: only the first output is differentiated", [node.op_type]
        )


def _channel_parameter(ctx: RuleContext, node: onnx.NodeProto, name: str, rank: int) -> str:
    """A per-channel [C] weight reshaped to [C, 1, ..., 1] so it broadcasts over [N, C, *spatial]."""
    return ctx.emit("Reshape", [name, ctx.ints([-1] + [1] * (rank - 2))])


# ---- InstanceNormalization --------------------------------------------------------------------
def _instance_jacobian(ctx: RuleContext, node: onnx.NodeProto, gradient: str) -> str:
    x = node.input[0]
    rank = ctx.require_rank(x, node)
    forward_axes = list(range(2, rank))
    inverse_std, normalized = _standardize(ctx, x, forward_axes, float_attribute(node, "epsilon", 1e-5))
    return _standardize_jacobian(ctx, gradient, inverse_std, normalized, [a + 1 for a in forward_axes])


@vjp_rule("InstanceNormalization")
def instance_normalization_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The standardization Jacobian over the spatial axes applied to g * scale[c]."""
    _weights_only(ctx, node, grads)
    scale = _channel_parameter(ctx, node, node.input[1], ctx.require_rank(node.input[0], node))
    return [_instance_jacobian(ctx, node, ctx.emit("Mul", [ctx.require_gradient(grads[0], node), scale]))]


@jvp_rule("InstanceNormalization")
def instance_normalization_jvp(
    ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]
) -> list[str | None]:
    """The Jacobian of per-instance, per-channel normalization applied to the tangent, times scale."""
    _weights_only(ctx, node)
    scale = _channel_parameter(ctx, node, node.input[1], ctx.require_rank(node.input[0], node))
    return [ctx.emit("Mul", [_instance_jacobian(ctx, node, ctx.require_gradient(tangents[0], node)), scale])]


# ---- GroupNormalization -----------------------------------------------------------------------
def _group_scale(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """The scale as [C, 1, ..., 1]: per channel (opset 21) or per group repeated (opset 18)."""
    x, scale = node.input[0], node.input[1]
    rank = ctx.require_rank(x, node)
    groups = int_attribute(node, "num_groups", REQUIRED)
    if ctx.opset >= 21:
        return _channel_parameter(ctx, node, scale, rank)
    shape = ctx.static_shape(x)
    channels = shape[1] if shape is not None else None
    if not isinstance(channels, int):
        raise UnsupportedOpError(
            f"GroupNormalization node {node.name!r}: the channel count is unknown", ["GroupNormalization"]
        )
    per_group = ctx.emit(
        "Expand", [ctx.emit("Reshape", [scale, ctx.ints([groups, 1])]), ctx.ints([groups, channels // groups])]
    )
    return ctx.emit("Reshape", [per_group, ctx.ints([channels] + [1] * (rank - 2))])


def _group_jacobian(ctx: RuleContext, node: onnx.NodeProto, gradient: str) -> str:
    """Standardize each group: forward x as [N, G, -1], the gradient as [M, N, G, -1], then back."""
    x = node.input[0]
    groups = int_attribute(node, "num_groups", REQUIRED)
    grouped = ctx.emit("Reshape", [x, ctx.emit("Concat", [ctx.shape_of(x, 0, 1), ctx.ints([groups, -1])], axis=0)])
    inverse_std, normalized = _standardize(ctx, grouped, [2], float_attribute(node, "epsilon", 1e-5))
    lead_grouped = ctx.reshape_lead(
        gradient, ctx.emit("Concat", [ctx.shape_of(x, 0, 1), ctx.ints([groups, -1])], axis=0)
    )
    return ctx.reshape_like(_standardize_jacobian(ctx, lead_grouped, inverse_std, normalized, [3]), x)


@vjp_rule("GroupNormalization")
def group_normalization_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The per-group standardization Jacobian applied to g * scale (per channel)."""
    _weights_only(ctx, node, grads)
    return [
        _group_jacobian(ctx, node, ctx.emit("Mul", [ctx.require_gradient(grads[0], node), _group_scale(ctx, node)]))
    ]


@jvp_rule("GroupNormalization")
def group_normalization_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The Jacobian of per-group normalization applied to the tangent, times the per-channel scale."""
    _weights_only(ctx, node)
    return [
        ctx.emit("Mul", [_group_jacobian(ctx, node, ctx.require_gradient(tangents[0], node)), _group_scale(ctx, node)])
    ]


# ---- MeanVarianceNormalization ----------------------------------------------------------------
MVN_EPSILON = 1e-9  # the function body: (x - mean) / (sqrt(var) + 1e-9)


def _mvn_jacobian(ctx: RuleContext, node: onnx.NodeProto, gradient: str) -> str:
    x = node.input[0]
    rank = ctx.require_rank(x, node)
    forward_axes = sorted(ctx.normalize_axis(a, rank) for a in ints_attribute(node, "axes", [0, 2, 3]))
    mean = ctx.reduce("ReduceMean", x, forward_axes, keepdims=True)
    centred = ctx.emit("Sub", [x, mean])
    std = ctx.emit("Sqrt", [ctx.reduce("ReduceMean", ctx.emit("Mul", [centred, centred]), forward_axes, keepdims=True)])
    denominator = ctx.emit("Add", [std, ctx.scalar(MVN_EPSILON, like=x)])
    inverse = ctx.emit("Reciprocal", [denominator])
    normalized = ctx.emit("Mul", [centred, inverse])
    ratio = ctx.emit("Div", [denominator, std])
    return _standardize_jacobian(ctx, gradient, inverse, normalized, [a + 1 for a in forward_axes], ratio)


@vjp_rule("MeanVarianceNormalization")
def mean_variance_normalization_vjp(
    ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]
) -> list[str | None]:
    """The (symmetric) standardization Jacobian over ``axes``."""
    return [_mvn_jacobian(ctx, node, ctx.require_gradient(grads[0], node))]


@jvp_rule("MeanVarianceNormalization")
def mean_variance_normalization_jvp(
    ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]
) -> list[str | None]:
    """The Jacobian of mean-variance normalization over its axes applied to the tangent."""
    return [_mvn_jacobian(ctx, node, ctx.require_gradient(tangents[0], node))]


# ---- LpNormalization --------------------------------------------------------------------------
def _lp_parts(ctx: RuleContext, node: onnx.NodeProto) -> tuple[str, str, str, int]:
    """(1/n, y, s, gradient axis) with s = y (p = 2) or sign(x) (p = 1)."""
    x, y = node.input[0], node.output[0]
    rank = ctx.require_rank(x, node)
    axis = ctx.normalize_axis(int_attribute(node, "axis", -1), rank)
    p = int_attribute(node, "p", 2)
    if p == 2:
        norm, direction = ctx.reduce("ReduceL2", x, [axis], keepdims=True), y
    elif p == 1:
        norm, direction = ctx.reduce("ReduceL1", x, [axis], keepdims=True), ctx.emit("Sign", [x])
    else:
        raise UnsupportedOpError(f"LpNormalization node {node.name!r}: p={p} (only 1 and 2 exist)", ["LpNormalization"])
    return ctx.emit("Reciprocal", [norm]), y, direction, axis + 1


@vjp_rule("LpNormalization")
def lp_normalization_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """J^T g = (g - s sum(y g)) / n."""
    inverse, y, direction, axis = _lp_parts(ctx, node)
    g = grads[0]
    along = ctx.reduce_sum(ctx.emit("Mul", [g, y]), [axis], keepdims=True)  # type: ignore[list-item]
    return [ctx.emit("Mul", [ctx.emit("Sub", [g, ctx.emit("Mul", [direction, along])]), inverse])]  # type: ignore[list-item]


@jvp_rule("LpNormalization")
def lp_normalization_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """J t = (t - y sum(s t)) / n."""
    inverse, y, direction, axis = _lp_parts(ctx, node)
    t = tangents[0]
    along = ctx.reduce_sum(ctx.emit("Mul", [t, direction]), [axis], keepdims=True)  # type: ignore[list-item]
    return [ctx.emit("Mul", [ctx.emit("Sub", [t, ctx.emit("Mul", [y, along])]), inverse])]  # type: ignore[list-item]


@vjp_rule("LayerNormalization")
def layer_normalization_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = r (h - mean(h) - xhat mean(xhat h)) with h = g * scale."""
    _layer_norm_check(ctx, node, grads)
    scaled = ctx.emit("Mul", [ctx.require_gradient(grads[0], node), node.input[1]])
    return [_normalize_jacobian(ctx, node, scaled)]


@jvp_rule("LayerNormalization")
def layer_normalization_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_y = scale * r (t - mean(t) - xhat mean(xhat t)); Mean/InvStdDev outputs get no tangent."""
    _layer_norm_check(ctx, node)
    return [ctx.emit("Mul", [_normalize_jacobian(ctx, node, ctx.require_gradient(tangents[0], node)), node.input[1]])]
