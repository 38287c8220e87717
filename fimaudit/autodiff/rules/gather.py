"""Gradient rules of indexing: Gather, GatherND, GatherElements, ScatterND.

Only the data is on the path (indices are integers). The JVP of a gather is the same gather
applied to the tangent. The VJP is a scatter-*add* of the cotangent into zeros (indices may
repeat, e.g. Gather with indices [0, 0]):

- from opset 16, ScatterElements with ``reduction='add'``;
- before opset 16 (no scatter reduction exists) a one-hot matrix built from the indices at run
  time, applied with MatMul (exact, cost |cotangent| x size of the gathered axis).

Gather and GatherND are first brought to one canonical form, ``data [P, n, Q]`` gathered at
``index [P or 1, N]`` along the middle axis, so both share the scatter-add. GatherND's index
tuples are linearised over the indexed dims (their sizes must be static); its batch dims become
P. Negative indices are wrapped before scattering.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from fimaudit.autodiff.context import Placement, RuleContext
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, int_attribute

SCATTER_REDUCTION = 16  # ScatterElements/ScatterND gained the 'reduction' attribute


# ---- helpers --------------------------------------------------------------------------------
def _product(ctx: RuleContext, name: str, start: int, end: int) -> str:
    """int64 [1]: the product of ``shape(name)[start:end]`` (static when known, else at run time)."""
    shape = ctx.static_shape(name)
    if shape is not None and all(isinstance(d, int) for d in shape[start:end]):
        return ctx.ints([int(np.prod(shape[start:end], dtype=np.int64))])  # type: ignore[arg-type]
    if start == end:
        return ctx.ints([1])
    return ctx.reduce("ReduceProd", ctx.shape_of(name, start, end), None, keepdims=True)


def _wrap_negative(ctx: RuleContext, indices: str, sizes: str) -> str:
    """Indices as int64 with negative entries wrapped (``sizes`` broadcasts against them)."""
    if ctx.facts.elem_types.get(indices) != onnx.TensorProto.INT64:
        indices = ctx.emit("Cast", [indices], to=onnx.TensorProto.INT64)
    negative = ctx.emit("Less", [indices, ctx.ints([0])])
    return ctx.emit("Where", [negative, ctx.emit("Add", [indices, sizes]), indices])


def _int_scalar(ctx: RuleContext, value: int) -> str:
    """A 0-d int64 tensor (Range wants true scalars; ``ctx.constant`` stores 0-d arrays as [1])."""
    return ctx.squeeze(ctx.ints([value]), [0])


def _arange(ctx: RuleContext, n: str) -> str:
    """int64 [n] = 0, 1, ..., n - 1 for an int64 [1] tensor ``n``."""
    return ctx.emit("Range", [_int_scalar(ctx, 0), ctx.squeeze(n, [0]), _int_scalar(ctx, 1)])


def _scatter_add_rows(ctx: RuleContext, updates: str, index: str, n: str, like: str) -> str:
    """Transpose of the canonical gather: ``out[m, p, index[p, j], q] += updates[m, p, j, q]``.

    ``updates`` is [M, P, N, Q], ``index`` int64 [B, N] with B = P or 1 and entries in [0, n),
    ``n`` int64 [1]; returns [M, P, n, Q]. ``like`` gives the float type.
    """
    if ctx.opset >= SCATTER_REDUCTION:
        target = ctx.emit(
            "Concat", [ctx.shape_of(updates, 0, 2), n, ctx.shape_of(updates, 3, 4)], axis=0
        )
        zeros = ctx.emit("Expand", [ctx.scalar(0.0, like=like), target])
        full_index = ctx.emit("Expand", [ctx.unsqueeze(index, [0, 3]), ctx.shape_of(updates)])
        return ctx.emit("ScatterElements", [zeros, full_index, updates], axis=2, reduction="add")
    one_hot = ctx.emit("Equal", [ctx.unsqueeze(index, [1]), ctx.unsqueeze(_arange(ctx, n), [1])])  # [B, n, N]
    return ctx.emit("MatMul", [ctx.emit("Cast", [one_hot], to=ctx.elem_type(like)), updates])


def _lead_last(ctx: RuleContext, tensor: str, rank: int) -> str:
    """[M, *s] -> [*s, M] (GatherND/ScatterND index the leading axes)."""
    return ctx.transpose(tensor, [*range(1, rank + 1), 0])


def _lead_first(ctx: RuleContext, tensor: str, rank: int) -> str:
    """[*s, M] -> [M, *s]."""
    return ctx.transpose(tensor, [rank, *range(rank)])


# ---- Gather ---------------------------------------------------------------------------------
def _single_constant_position(
    ctx: RuleContext, node: onnx.NodeProto, rank: int, axis: int
) -> tuple[int, int, bool] | None:
    """(wrapped index, static axis size, index is 0-d) when Gather picks one constant position, else None.

    One compile-time constant position of a static axis: a ViT's class token ``x[:, 0]``.
    """
    data, indices = node.input[:2]
    value = ctx.constant_value(indices)
    if value is None or value.size != 1 or value.ndim > 1 or value.dtype.kind not in "iu":
        return None
    shape = ctx.static_shape(data)
    size = shape[axis] if shape is not None and len(shape) == rank else None
    if not isinstance(size, int):
        return None
    position = int(value.reshape(-1)[0])
    position = position + size if position < 0 else position
    if not 0 <= position < size:
        return None
    out_rank = ctx.rank(node.output[0])
    if out_rank is not None and out_rank != rank - 1 + value.ndim:
        return None
    return position, size, value.ndim == 0


@vjp_rule("Gather")
def gather_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Scatter-add the cotangent back to the gathered positions (repeated indices accumulate).

    One constant position i needs no scatter: the data's cotangent is the output's, given back
    its axis and zero-padded (i before, size - i - 1 after). ScatterElements was 55% of the
    small ViT's VJP run time for its class-token Gather.
    """
    g = ctx.require_gradient(grads[0], node)
    data, indices = node.input[:2]
    rank = ctx.require_rank(data, node)
    axis = ctx.normalize_axis(int_attribute(node, "axis", 0), rank)
    single = _single_constant_position(ctx, node, rank, axis)
    if single is not None:
        position, size, scalar = single
        lead_axis = axis + 1  # the cotangent has the lead axis M first
        slab = ctx.unsqueeze(g, [lead_axis]) if scalar else g
        return [ctx.place(Placement(slab, lead_axis, position, 1, size, rank + 1))]
    n = _product(ctx, data, axis, axis + 1)
    flat = ctx.emit("Reshape", [_wrap_negative(ctx, indices, n), ctx.ints([1, -1])])  # [1, N]
    rows = ctx.emit(
        "Reshape",
        [
            g,
            ctx.emit(
                "Concat",
                [ctx.lead_dim(), _product(ctx, data, 0, axis), ctx.ints([-1]), _product(ctx, data, axis + 1, rank)],
                axis=0,
            ),
        ],
    )
    return [ctx.reshape_like(_scatter_add_rows(ctx, rows, flat, n, data), data)]


@jvp_rule("Gather")
def gather_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Gather the tangent at the same indices (axis shifted past the lead axis)."""
    axis = ctx.shift_axis(int_attribute(node, "axis", 0))
    return [ctx.emit("Gather", [ctx.require_gradient(tangents[0], node), node.input[1]], axis=axis)]


# ---- GatherND -------------------------------------------------------------------------------
def _gather_nd_layout(ctx: RuleContext, node: onnx.NodeProto) -> tuple[int, int, list[int], int]:
    """(batch_dims b, data rank, static sizes of the k indexed dims, output rank)."""
    data, indices = node.input[:2]
    rank = ctx.require_rank(data, node)
    batch = int_attribute(node, "batch_dims", 0)
    index_shape = ctx.static_shape(indices)
    data_shape = ctx.static_shape(data)
    k = index_shape[-1] if index_shape else None
    if (
        not isinstance(k, int)
        or data_shape is None
        or not all(isinstance(d, int) for d in data_shape[batch : batch + k])
    ):
        raise UnsupportedOpError(
            f"GatherND node {node.name!r}: the index depth and the indexed dims must be static", ["GatherND"]
        )
    return batch, rank, [int(d) for d in data_shape[batch : batch + k]], ctx.require_rank(node.output[0], node)  # type: ignore[arg-type]


@vjp_rule("GatherND")
def gather_nd_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Linearise the index tuples over the indexed dims, then scatter-add like Gather (batch dims = P)."""
    g = ctx.require_gradient(grads[0], node)
    data, indices = node.input[:2]
    batch, rank, dims, _ = _gather_nd_layout(ctx, node)
    k = len(dims)
    strides = [int(np.prod(dims[i + 1 :], dtype=np.int64)) for i in range(k)]
    wrapped = _wrap_negative(ctx, indices, ctx.ints(dims))
    linear = ctx.reduce_sum(ctx.emit("Mul", [wrapped, ctx.ints(strides)]), [-1], keepdims=False)
    batch_size = _product(ctx, data, 0, batch)
    index = ctx.emit("Reshape", [linear, ctx.emit("Concat", [batch_size, ctx.ints([-1])], axis=0)])  # [P, N]
    rest = _product(ctx, data, batch + k, rank)
    rows = ctx.emit("Reshape", [g, ctx.emit("Concat", [ctx.lead_dim(), batch_size, ctx.ints([-1]), rest], axis=0)])
    n = ctx.ints([int(np.prod(dims, dtype=np.int64))])
    return [ctx.reshape_like(_scatter_add_rows(ctx, rows, index, n, data), data)]


@jvp_rule("GatherND")
def gather_nd_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """GatherND of the tangent with the lead axis moved last (it becomes part of the gathered slices)."""
    batch, rank, _, out_rank = _gather_nd_layout(ctx, node)
    moved = _lead_last(ctx, ctx.require_gradient(tangents[0], node), rank)
    gathered = ctx.emit("GatherND", [moved, node.input[1]], batch_dims=batch or None)
    return [_lead_first(ctx, gathered, out_rank)]


# ---- GatherElements -------------------------------------------------------------------------
@vjp_rule("GatherElements")
def gather_elements_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Scatter-add the cotangent along the axis.

    ScatterElements with reduction 'add' from opset 16; before, a one-hot product, which needs the
    indices' other dims to equal the data's.
    """
    g = ctx.require_gradient(grads[0], node)
    data, indices = node.input[:2]
    rank = ctx.require_rank(data, node)
    axis = ctx.normalize_axis(int_attribute(node, "axis", 0), rank)
    n = _product(ctx, data, axis, axis + 1)
    wrapped = _wrap_negative(ctx, indices, n)
    if ctx.opset >= SCATTER_REDUCTION:
        zeros = ctx.zeros_lead_like(data)
        full_index = ctx.emit("Expand", [ctx.unsqueeze(wrapped, [0]), ctx.shape_of(g)])
        return [ctx.emit("ScatterElements", [zeros, full_index, g], axis=axis + 1, reduction="add")]
    data_shape, index_shape = ctx.static_shape(data), ctx.static_shape(indices)
    if (
        data_shape is None
        or index_shape is None
        or len(data_shape) != len(index_shape)
        or any(a != b or a is None for i, (a, b) in enumerate(zip(data_shape, index_shape, strict=True)) if i != axis)
    ):
        raise UnsupportedOpError(
            f"GatherElements node {node.name!r}: before opset {SCATTER_REDUCTION} the gradient needs indices "
            "whose dims other than the axis are known to equal the data's",
            ["GatherElements"],
        )
    positions = ctx.emit("Reshape", [_arange(ctx, n), ctx.ints([-1] + [1] * (rank - axis - 1))])
    one_hot = ctx.emit(
        "Cast", [ctx.emit("Equal", [ctx.unsqueeze(wrapped, [axis + 1]), positions])], to=ctx.elem_type(data)
    )
    spread = ctx.emit("Mul", [ctx.unsqueeze(g, [axis + 2]), one_hot])
    return [ctx.reduce_sum(spread, [axis + 1], keepdims=False)]


@jvp_rule("GatherElements")
def gather_elements_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """GatherElements of the tangent with the indices broadcast over the lead axis."""
    t = tangents[0]
    axis = ctx.shift_axis(int_attribute(node, "axis", 0))
    index_shape = ctx.emit("Concat", [ctx.lead_dim(), ctx.shape_of(node.input[1])], axis=0)
    full_index = ctx.emit("Expand", [ctx.unsqueeze(node.input[1], [0]), index_shape])
    return [ctx.emit("GatherElements", [t, full_index], axis=axis)]  # type: ignore[list-item]


# ---- ScatterND ------------------------------------------------------------------------------
def _scatter_reduction(node: onnx.NodeProto) -> str:
    reduction = str(attribute(node, "reduction", "none"))
    if reduction not in ("none", "add"):
        raise UnsupportedOpError(
            f"ScatterND node {node.name!r}: reduction {reduction!r} is not supported (only none and add)", ["ScatterND"]
        )
    return reduction


@vjp_rule("ScatterND")
def scatter_nd_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Data: the cotangent, zeroed where updates overwrote it; updates: the cotangent at the indices.

    Where updates were added (a reduction), the data keeps its cotangent. Indices must be unique
    when reduction='none' (otherwise ONNX leaves the result undefined).
    """
    g = ctx.require_gradient(grads[0], node)
    data, indices, updates = node.input[:3]
    reduction = _scatter_reduction(node)
    rank = ctx.require_rank(data, node)
    moved = _lead_last(ctx, g, rank)
    grad_data = grad_updates = None
    if ctx.needs_gradient(data):
        if reduction == "add":
            grad_data = g
        else:
            zeros = ctx.emit(
                "Expand",
                [ctx.scalar(0.0, like=data), ctx.emit("Concat", [ctx.shape_of(updates), ctx.lead_dim()], axis=0)],
            )
            grad_data = _lead_first(ctx, ctx.emit("ScatterND", [moved, indices, zeros]), rank)
    if ctx.needs_gradient(updates):
        grad_updates = _lead_first(ctx, ctx.emit("GatherND", [moved, indices]), ctx.require_rank(updates, node))
    return [grad_data, None, grad_updates]


@jvp_rule("ScatterND")
def scatter_nd_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """ScatterND of the tangents (lead axis moved last); zeros stand in for a missing tangent."""
    t_data, _, t_updates = (list(tangents) + [None] * 3)[:3]
    data, indices, updates = node.input[:3]
    reduction = _scatter_reduction(node)
    rank = ctx.require_rank(data, node)
    if t_updates is None and reduction == "add":
        return [t_data]
    base = _lead_last(ctx, t_data if t_data is not None else ctx.zeros_lead_like(data), rank)
    update_rank = ctx.require_rank(updates, node)
    moved_updates = _lead_last(ctx, t_updates if t_updates is not None else ctx.zeros_lead_like(updates), update_rank)
    scattered = ctx.emit(
        "ScatterND", [base, indices, moved_updates], reduction=reduction if reduction != "none" else None
    )
    return [_lead_first(ctx, scattered, rank)]
