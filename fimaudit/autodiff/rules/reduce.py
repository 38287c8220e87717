"""Gradient rules of reductions.

ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSumExp.

Every reduction here has a derivative of the same form: dy = ReduceSum(w * dx) over the reduced
axes, with a pointwise weight w of the input's shape (1 for ReduceSum, 1/count for ReduceMean,
x/y for ReduceL2, ...). So each op only names its weight; the VJP is ``expand(g) * w`` and the
JVP is ``ReduceSum(t * w)``, the same w on both sides, so the twins are adjoint by construction.

Axes: an attribute before opset 13 (ReduceSum) or 18 (the others), an input from then on (it
must be a constant). No axes means all axes, unless ``noop_with_empty_axes`` makes the op reduce
over no axes (elementwise). ``keepdims=0`` is undone by unsqueezing the cotangent at the reduced
axes.

Ties of ReduceMax/ReduceMin: the gradient is split evenly among the elements equal to the
extremum (as PyTorch's ``amax``/``amin``, and as the elementwise Max/Min rules here). Off ties
this is the exact derivative; at a tie it is the average of the one-sided choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from fimaudit.autodiff.context import AXES_AS_INPUT, REDUCE_AXES_AS_INPUT, RuleContext, optional_input
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, ints_attribute


@dataclass(frozen=True)
class Reduction:
    """What a Reduce* node does, resolved across opset forms."""

    #: Reduced forward axes (non-negative, sorted). Empty when ``noop_with_empty_axes`` applies:
    #: then the op reduces over no axes, which is elementwise (ReduceL1 gives |x|, ReduceSumSquare
    #: x^2, ReduceSum the identity), as ONNX Runtime and onnx.reference both compute it.
    axes: list[int]
    keepdims: bool


def reduction(ctx: RuleContext, node: onnx.NodeProto) -> Reduction:
    """Resolve axes (attribute or constant input), keepdims and noop_with_empty_axes."""
    rank = ctx.require_rank(node.input[0], node)
    keepdims = bool(attribute(node, "keepdims", 1))
    noop = False
    if ctx.opset >= AXES_AS_INPUT.get(node.op_type, REDUCE_AXES_AS_INPUT):
        noop = bool(attribute(node, "noop_with_empty_axes", 0))
        axes_name = optional_input(node, 1)
        value = ctx.constant_value(axes_name) if axes_name else np.zeros(0, dtype=np.int64)
        if value is None:
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name!r}: axes computed at run time are not supported", [node.op_type]
            )
        axes = [int(a) for a in np.asarray(value).reshape(-1)]
    else:
        axes = ints_attribute(node, "axes", [])
    if not axes:
        if noop:
            return Reduction([], keepdims)
        axes = list(range(rank))
    return Reduction(sorted({ctx.normalize_axis(a, rank) for a in axes}), keepdims)


def _sum_over(ctx: RuleContext, tensor: str, axes: list[int], keepdims: bool) -> str:
    """ReduceSum over ``axes``; no axes means nothing to sum (never "all axes")."""
    return ctx.reduce_sum(tensor, axes, keepdims=keepdims) if axes else tensor


def _kept(ctx: RuleContext, tensor: str, axes: list[int], keepdims: bool, lead: bool) -> str:
    """A reduced tensor with its reduced axes restored as size 1 (keepdims=0 undone)."""
    if keepdims or not axes:
        return tensor
    return ctx.unsqueeze(tensor, [a + 1 for a in axes] if lead else axes)


# A weight function returns the pointwise weight w of dy = ReduceSum(w * dx) (None for w = 1) and
# whether w has the input's full shape (else it is a scalar).
Weight = Callable[[RuleContext, onnx.NodeProto, Reduction], "tuple[str | None, bool]"]


def _linear_vjp(
    ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None], weight: Weight
) -> list[str | None]:
    g = ctx.require_gradient(grads[0], node)
    spec = reduction(ctx, node)
    w, full = weight(ctx, node, spec)
    kept = _kept(ctx, g, spec.axes, spec.keepdims, lead=True)
    weighted = kept if w is None else ctx.emit("Mul", [kept, w])
    if full:
        return [weighted]  # an input-shaped weight already broadcast the product to [M, *shape(x)]
    return [ctx.expand_lead(weighted, node.input[0])]


def _linear_jvp(
    ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None], weight: Weight
) -> list[str | None]:
    t = tangents[0]
    spec = reduction(ctx, node)
    w, _ = weight(ctx, node, spec)
    weighted = t if w is None else ctx.emit("Mul", [t, w])  # type: ignore[list-item]
    return [_sum_over(ctx, weighted, [a + 1 for a in spec.axes], spec.keepdims)]  # type: ignore[arg-type]


def _y_kept(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> str:
    return _kept(ctx, node.output[0], spec.axes, spec.keepdims, lead=False)


# ---- weights ----------------------------------------------------------------------------------
def _sum_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    return None, False


def _mean_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    """1 / (number of reduced elements): static when the reduced dims are, else Size(x)/Size(y)."""
    x, y = node.input[0], node.output[0]
    shape = ctx.static_shape(x)
    dims = [] if shape is None else [d for d in (shape[a] for a in spec.axes) if isinstance(d, int)]
    if shape is not None and len(dims) == len(spec.axes):
        count = int(np.prod(dims))
        return ctx.scalar(1.0 / count, like=x), False
    sizes = [ctx.emit("Cast", [ctx.emit("Size", [name])], to=ctx.elem_type(x)) for name in (y, x)]
    return ctx.emit("Div", sizes), False


def _extremum_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    """(x == y) / (number of elements equal to y): ties share the gradient evenly."""
    x = node.input[0]
    mask = ctx.emit("Cast", [ctx.emit("Equal", [x, _y_kept(ctx, node, spec)])], to=ctx.elem_type(x))
    return ctx.emit("Div", [mask, _sum_over(ctx, mask, spec.axes, True)]), True


def _l1_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    """sign(x) (0 at x = 0)."""
    return ctx.emit("Sign", [node.input[0]]), True


def _l2_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    """X / y: d sqrt(sum x^2) = sum(x dx) / y (undefined where y = 0)."""
    return ctx.emit("Div", [node.input[0], _y_kept(ctx, node, spec)]), True


def _sum_square_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    """2 x."""
    x = node.input[0]
    return ctx.emit("Mul", [x, ctx.scalar(2.0, like=x)]), True


def _log_sum_exp_weight(ctx: RuleContext, node: onnx.NodeProto, spec: Reduction) -> tuple[str | None, bool]:
    """exp(x - y): the softmax of x over the reduced axes."""
    return ctx.emit("Exp", [ctx.emit("Sub", [node.input[0], _y_kept(ctx, node, spec)])]), True


# ---- the rules ----------------------------------------------------------------------------------
@vjp_rule("ReduceSum")
def reduce_sum_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Broadcast the cotangent back over the reduced axes."""
    return _linear_vjp(ctx, node, grads, _sum_weight)


@jvp_rule("ReduceSum")
def reduce_sum_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The same sum over the same axes of the tangent."""
    return _linear_jvp(ctx, node, tangents, _sum_weight)


@vjp_rule("ReduceMean")
def reduce_mean_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Broadcast the cotangent back, divided by the number of reduced elements."""
    return _linear_vjp(ctx, node, grads, _mean_weight)


@jvp_rule("ReduceMean")
def reduce_mean_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The same mean over the same axes of the tangent."""
    return _linear_jvp(ctx, node, tangents, _mean_weight)


@vjp_rule("ReduceMax")
def reduce_max_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cotangent goes to the maximal element(s); ties split it evenly."""
    return _linear_vjp(ctx, node, grads, _extremum_weight)


@jvp_rule("ReduceMax")
def reduce_max_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent at the maximum of each reduced slice (ties averaged)."""
    return _linear_jvp(ctx, node, tangents, _extremum_weight)


@vjp_rule("ReduceMin")
def reduce_min_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cotangent goes to the minimal element(s); ties split it evenly."""
    return _linear_vjp(ctx, node, grads, _extremum_weight)


@jvp_rule("ReduceMin")
def reduce_min_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent at the minimum of each reduced slice (ties averaged)."""
    return _linear_jvp(ctx, node, tangents, _extremum_weight)


@vjp_rule("ReduceL1")
def reduce_l1_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D sum|x| = sum sign(x) dx."""
    return _linear_vjp(ctx, node, grads, _l1_weight)


@jvp_rule("ReduceL1")
def reduce_l1_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D sum|x| = sum(sign(x) dx) over the reduced axes."""
    return _linear_jvp(ctx, node, tangents, _l1_weight)


@vjp_rule("ReduceL2")
def reduce_l2_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D ||x|| = sum (x / ||x||) dx."""
    return _linear_vjp(ctx, node, grads, _l2_weight)


@jvp_rule("ReduceL2")
def reduce_l2_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D ||x|| = sum(x dx) / ||x|| over the reduced axes."""
    return _linear_jvp(ctx, node, tangents, _l2_weight)


@vjp_rule("ReduceSumSquare")
def reduce_sum_square_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D sum x^2 = sum 2 x dx."""
    return _linear_vjp(ctx, node, grads, _sum_square_weight)


@jvp_rule("ReduceSumSquare")
def reduce_sum_square_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D sum(x^2) = sum(2 x dx) over the reduced axes."""
    return _linear_jvp(ctx, node, tangents, _sum_square_weight)


@vjp_rule("ReduceLogSumExp")
def reduce_log_sum_exp_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D log sum exp(x) = sum softmax(x) dx."""
    return _linear_vjp(ctx, node, grads, _log_sum_exp_weight)


@jvp_rule("ReduceLogSumExp")
def reduce_log_sum_exp_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D log sum exp(x) = sum(softmax(x) dx) over the reduced axes."""
    return _linear_jvp(ctx, node, tangents, _log_sum_exp_weight)
