"""Gradient rules of data movement.

Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Expand, Pad, Tile.

These ops move or copy elements without arithmetic, so every rule is another data-movement op
on the gradient (which has one extra leading axis M, see ``registry.py``):

- Pure reshapes (Reshape, Flatten, Squeeze, Unsqueeze) reshape the gradient to the other side's
  *actual* shape (static from shape inference, else read at run time). The attribute-versus-input
  forms of their axes (opset 13), 0 and -1 in Reshape targets and ``allowzero`` therefore need no
  special handling: the forward op already resolved them.
- Slice's VJP places the cotangent back into zeros. With constant parameters, static dims and
  unit steps that is one Pad; otherwise (negative or large steps, parameters computed at run
  time) the selected positions are computed at run time by slicing an ``arange`` with the very
  same parameters (so ONNX's clamping rules are applied by the runtime itself), inverted with
  ScatterElements, and the cotangent is gathered from a copy with one zero appended.
- Pad's VJP crops (constant mode) and folds the padded borders back onto the interior
  (reflect, edge, wrap).

Zero-gradient markers of shape arithmetic live in ``markers.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from fimaudit.autodiff.context import PADS_AS_INPUT, Placement, RuleContext, optional_input
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import ModelError, UnsupportedOpError
from fimaudit.graph.onnx_utils import REQUIRED, Required, attribute, int_attribute, ints_attribute

INT64_MAX = int(np.iinfo(np.int64).max)
INT64_MIN = int(np.iinfo(np.int64).min)
PAD_AXES_INPUT = 18  # Pad: optional axes input

IntValue = int | str  # a Python int, or the name of an int64 tensor of shape [1]


# ---- small int helpers ----------------------------------------------------------------------
def _as_tensor(ctx: RuleContext, value: IntValue) -> str:
    return ctx.ints([value]) if isinstance(value, int) else value


def _add(ctx: RuleContext, a: IntValue, b: IntValue) -> IntValue:
    """A + b, folded in Python when both are known."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return ctx.emit("Add", [_as_tensor(ctx, a), _as_tensor(ctx, b)])


def _dim(ctx: RuleContext, name: str, axis: int) -> IntValue:
    """Size of ``name`` along a non-negative ``axis``: static when known, else read at run time."""
    shape = ctx.static_shape(name)
    if shape is not None and isinstance(shape[axis], int):
        return int(shape[axis])  # type: ignore[arg-type]
    return ctx.shape_of(name, axis, axis + 1)


def _static_dims(ctx: RuleContext, name: str, axes: Sequence[int]) -> list[int] | None:
    shape = ctx.static_shape(name)
    if shape is None or not all(isinstance(shape[a], int) for a in axes):
        return None
    return [int(shape[a]) for a in axes]  # type: ignore[arg-type]


def _int_constant(ctx: RuleContext, name: str | None) -> list[int] | None:
    value = ctx.constant_value(name)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _int_scalar(ctx: RuleContext, value: int) -> str:
    """A 0-d int64 tensor (Range wants true scalars; ``ctx.constant`` stores 0-d arrays as [1])."""
    return ctx.squeeze(ctx.ints([value]), [0])


def _as_int64(ctx: RuleContext, name: str) -> str:
    """An int tensor (int32 or int64) as int64."""
    if ctx.facts.elem_types.get(name) == onnx.TensorProto.INT64:
        return name
    return ctx.emit("Cast", [name], to=onnx.TensorProto.INT64)


def _index_dtype(ctx: RuleContext, name: str) -> type:
    """Numpy dtype of an index tensor (Slice's Tind is int32 or int64)."""
    value = ctx.constant_value(name)
    if value is not None:
        return np.asarray(value).dtype.type
    return np.int32 if ctx.facts.elem_types.get(name) == onnx.TensorProto.INT32 else np.int64


def _pad_lead(
    ctx: RuleContext, tensor: str, rank: int, begins: dict[int, int], ends: dict[int, int], mode: str = "constant"
) -> str:
    """Pad a gradient ``[M, *shape]`` by ``begins``/``ends`` per forward axis (opset-aware form)."""
    full_begin = [0] * (rank + 1)
    full_end = [0] * (rank + 1)
    for axis, amount in begins.items():
        full_begin[axis + 1] = amount
    for axis, amount in ends.items():
        full_end[axis + 1] = amount
    return ctx.pad(tensor, full_begin + full_end, mode)


# ---- pure reshapes --------------------------------------------------------------------------
def _reshape_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    return [ctx.reshape_like(ctx.require_gradient(grads[0], node), node.input[0], lead_first=True)]


def _reshape_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    return [ctx.reshape_like(ctx.require_gradient(tangents[0], node), node.output[0], lead_first=True)]


@vjp_rule("Reshape")
def reshape_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Reshape the cotangent back to the data's shape (0, -1 and allowzero were resolved forward)."""
    return _reshape_vjp(ctx, node, grads)


@jvp_rule("Reshape")
def reshape_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent reshaped to the output's shape (behind the lead axis)."""
    return _reshape_jvp(ctx, node, tangents)


@vjp_rule("Flatten")
def flatten_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Flatten is a reshape: reshape the cotangent back to the input's shape."""
    return _reshape_vjp(ctx, node, grads)


@jvp_rule("Flatten")
def flatten_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent flattened like the output (behind the lead axis)."""
    return _reshape_jvp(ctx, node, tangents)


@vjp_rule("Squeeze")
def squeeze_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Squeeze is a reshape (axes attribute or input, either opset form): reshape back."""
    return _reshape_vjp(ctx, node, grads)


@jvp_rule("Squeeze")
def squeeze_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent squeezed like the output (behind the lead axis)."""
    return _reshape_jvp(ctx, node, tangents)


@vjp_rule("Unsqueeze")
def unsqueeze_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Unsqueeze is a reshape (axes attribute or input, either opset form): reshape back."""
    return _reshape_vjp(ctx, node, grads)


@jvp_rule("Unsqueeze")
def unsqueeze_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent unsqueezed like the output (behind the lead axis)."""
    return _reshape_jvp(ctx, node, tangents)


# ---- Transpose ------------------------------------------------------------------------------
def _perm(ctx: RuleContext, node: onnx.NodeProto) -> list[int]:
    perm = ints_attribute(node, "perm")
    if perm is None:  # default: reverse the axes
        return list(reversed(range(ctx.require_rank(node.input[0], node))))
    return perm


@vjp_rule("Transpose")
def transpose_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Transpose the cotangent by the inverse permutation (the lead axis stays first)."""
    perm = _perm(ctx, node)
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [ctx.transpose(ctx.require_gradient(grads[0], node), [0] + [i + 1 for i in inverse])]


@jvp_rule("Transpose")
def transpose_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent transposed by the same permutation (the lead axis kept first)."""
    return [ctx.transpose(ctx.require_gradient(tangents[0], node), [0] + [p + 1 for p in _perm(ctx, node)])]


# ---- Concat / Split -------------------------------------------------------------------------
def _pieces(
    ctx: RuleContext, gradient: str, pieces: Sequence[str], wanted: Sequence[bool], axis: int
) -> list[str | None]:
    """Consecutive slices of ``gradient`` along forward ``axis``, one per piece (sized like it)."""
    offset: IntValue = 0
    results: list[str | None] = []
    for name, want in zip(pieces, wanted, strict=True):
        end = _add(ctx, offset, _dim(ctx, name, axis))
        results.append(ctx.slice(gradient, _as_tensor(ctx, offset), _as_tensor(ctx, end), [axis + 1]) if want else None)
        offset = end
    return results


def _axis(ctx: RuleContext, node: onnx.NodeProto, name: str, default: int | Required = REQUIRED) -> int:
    """The node's non-negative ``axis`` attribute for the forward tensor ``name`` (required unless ``default``)."""
    return ctx.normalize_axis(int_attribute(node, "axis", default), ctx.require_rank(name, node))


@vjp_rule("Concat")
def concat_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Each operand on the path receives its slice of the cotangent along the concat axis."""
    wanted = [ctx.needs_gradient(name) for name in node.input]
    return _pieces(ctx, ctx.require_gradient(grads[0], node), node.input, wanted, _axis(ctx, node, node.output[0]))


@jvp_rule("Concat")
def concat_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Concatenate the tangents; operands off the path contribute zeros."""
    parts = [t if t is not None else ctx.zeros_lead_like(name) for t, name in zip(tangents, node.input, strict=True)]
    return [ctx.emit("Concat", parts, axis=ctx.shift_axis(int_attribute(node, "axis", REQUIRED)))]


@vjp_rule("Split")
def split_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Concatenate the outputs' cotangents (zeros for outputs without one) along the split axis."""
    parts = [g if g is not None else ctx.zeros_lead_like(name) for g, name in zip(grads, node.output, strict=True)]
    axis = ctx.shift_axis(int_attribute(node, "axis", 0))
    return [ctx.emit("Concat", parts, axis=axis)]


@jvp_rule("Split")
def split_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Slice the tangent like the outputs, with the sizes read from the outputs.

    So every opset form of the split sizes (attribute < 13, input >= 13, num_outputs >= 18) is
    handled alike.
    """
    axis = _axis(ctx, node, node.input[0], 0)
    wanted = [ctx.needs_gradient(name) for name in node.output]
    return _pieces(ctx, ctx.require_gradient(tangents[0], node), node.output, wanted, axis)


# ---- Slice ----------------------------------------------------------------------------------
def _slice_axes(ctx: RuleContext, node: onnx.NodeProto) -> list[int]:
    """The sliced forward axes, non-negative; they must be known when the graph is built."""
    if ctx.opset < 10 or len(node.input) < 3:
        raise UnsupportedOpError(
            f"Slice node {node.name!r}: the attribute form (opset < 10) is not supported", ["Slice"]
        )
    rank = ctx.require_rank(node.input[0], node)
    axes_name = optional_input(node, 3)
    if axes_name is not None:
        axes = _int_constant(ctx, axes_name)
        if axes is None:
            raise UnsupportedOpError(
                f"Slice node {node.name!r}: axes computed at run time are not supported", ["Slice"]
            )
        return [ctx.normalize_axis(a, rank) for a in axes]
    starts_shape = ctx.static_shape(node.input[1])
    if starts_shape is None or not isinstance(starts_shape[0], int):
        raise UnsupportedOpError(f"Slice node {node.name!r}: the number of sliced axes is unknown", ["Slice"])
    return list(range(int(starts_shape[0])))


def _static_unit_slice(ctx: RuleContext, node: onnx.NodeProto, axes: list[int]) -> list[tuple[int, int]] | None:
    """Per sliced axis (elements before, elements after) the selection, when all is static and steps are 1."""
    starts = _int_constant(ctx, node.input[1])
    ends = _int_constant(ctx, node.input[2])
    steps_name = optional_input(node, 4)
    steps = [1] * len(axes) if steps_name is None else _int_constant(ctx, steps_name)
    dims = _static_dims(ctx, node.input[0], axes)
    if starts is None or ends is None or steps is None or dims is None or any(s != 1 for s in steps):
        return None
    borders = []
    for start, end, n in zip(starts, ends, dims, strict=True):
        begin, stop, _ = slice(start, end, 1).indices(n)  # ONNX clamps unit steps as Python does
        kept = max(0, stop - begin)
        borders.append((begin, n - begin - kept))
    return borders


def _slice_parameter(ctx: RuleContext, name: str | None, index: int, default: int) -> str:
    """Element ``index`` of a Slice parameter as an int64 [1] tensor (constant when known)."""
    if name is None:
        return ctx.ints([default])
    values = _int_constant(ctx, name)
    if values is not None:
        return ctx.ints([values[index]])
    return ctx.slice(_as_int64(ctx, name), [index], [index + 1], [0])


def _scatter_back_axis(ctx: RuleContext, node: onnx.NodeProto, gradient: str, index: int, axis: int, rank: int) -> str:
    """Undo the selection of Slice along one forward axis, for any step and clamping.

    The selected positions are ``Slice(arange(n), start, end, step)`` (the runtime applies ONNX's
    own clamping); ``inverse[i]`` is the position of input element i in the selection, or k (one
    past the end) when it was not selected, and the gradient is gathered from a copy with one zero
    appended at position k.
    """
    data = node.input[0]
    n = ctx.squeeze(ctx.shape_of(data, axis, axis + 1), [0])
    zero, one = _int_scalar(ctx, 0), _int_scalar(ctx, 1)
    arange = ctx.emit("Range", [zero, n, one])
    selected = ctx.slice(
        arange,
        _slice_parameter(ctx, node.input[1], index, 0),
        _slice_parameter(ctx, node.input[2], index, 0),
        [0],
        _slice_parameter(ctx, optional_input(node, 4), index, 1),
    )
    count = ctx.emit("Shape", [selected])
    positions = ctx.emit("Range", [zero, ctx.squeeze(count, [0]), one])
    unselected = ctx.emit("Expand", [count, ctx.shape_of(data, axis, axis + 1)])
    inverse = ctx.emit("ScatterElements", [unselected, selected, positions], axis=0)
    padded = _pad_lead(ctx, gradient, rank, {}, {axis: 1})
    return ctx.emit("Gather", [padded, inverse], axis=axis + 1)


@vjp_rule("Slice")
def slice_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Place the cotangent back where the slice took it from; zeros elsewhere."""
    g = ctx.require_gradient(grads[0], node)
    rank = ctx.require_rank(node.input[0], node)
    axes = _slice_axes(ctx, node)
    borders = _static_unit_slice(ctx, node, axes)
    dims = _static_dims(ctx, node.input[0], axes)
    if borders is not None and len(axes) == 1 and dims is not None:
        (before, after), total = borders[0], int(dims[0])
        return [ctx.place(Placement(g, axes[0] + 1, before, total - before - after, total, rank + 1))]
    if borders is not None:
        begins = {axis: before for axis, (before, _) in zip(axes, borders, strict=True)}
        ends = {axis: after for axis, (_, after) in zip(axes, borders, strict=True)}
        return [_pad_lead(ctx, g, rank, begins, ends)]
    result = g
    for index, axis in enumerate(axes):
        result = _scatter_back_axis(ctx, node, result, index, axis, rank)
    return [result]


@jvp_rule("Slice")
def slice_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Slice the tangent with the same parameters (axes shifted past the lead axis)."""
    axes = _slice_axes(ctx, node)
    shifted = ctx.constant(np.array([a + 1 for a in axes], dtype=_index_dtype(ctx, node.input[1])), "axes")
    steps = optional_input(node, 4)
    inputs = [tangents[0], node.input[1], node.input[2], shifted] + ([steps] if steps else [])
    return [ctx.emit("Slice", inputs)]


# ---- Expand / Tile --------------------------------------------------------------------------
@vjp_rule("Expand")
def expand_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Sum the cotangent over the broadcast axes (the shared unbroadcast helper)."""
    return [ctx.unbroadcast(ctx.require_gradient(grads[0], node), node.input[0], node.output[0])]


@jvp_rule("Expand")
def expand_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent expanded to the output's shape."""
    return [ctx.expand_to(ctx.require_gradient(tangents[0], node), node.input[0], node.output[0])]


@vjp_rule("Tile")
def tile_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Sum the copies: view the cotangent as [M, r0, d0, r1, d1, ...] and sum the r axes."""
    data, repeats = node.input[:2]
    rank = ctx.require_rank(data, node)
    shape = ctx.static_shape(data)
    dims = ctx.ints(shape) if shape is not None and all(isinstance(d, int) for d in shape) else ctx.shape_of(data)  # type: ignore[arg-type]
    pairs = ctx.emit("Concat", [ctx.unsqueeze(repeats, [1]), ctx.unsqueeze(dims, [1])], axis=1)
    interleaved = ctx.emit("Reshape", [pairs, ctx.ints([-1])])
    blocks = ctx.emit(
        "Reshape", [ctx.require_gradient(grads[0], node), ctx.emit("Concat", [ctx.lead_dim(), interleaved], axis=0)]
    )
    return [ctx.reduce_sum(blocks, [1 + 2 * i for i in range(rank)], keepdims=False)]


@jvp_rule("Tile")
def tile_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Tile the tangent the same way (the lead axis repeated once)."""
    repeats = ctx.emit("Concat", [ctx.ints([1]), node.input[1]], axis=0)
    return [ctx.emit("Tile", [ctx.require_gradient(tangents[0], node), repeats])]


# ---- Pad ------------------------------------------------------------------------------------
def _pad_mode(node: onnx.NodeProto) -> str:
    mode = str(attribute(node, "mode", "constant"))
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise UnsupportedOpError(f"Pad node {node.name!r}: mode {mode!r} is not supported", ["Pad"])
    return mode


def _pad_axes(ctx: RuleContext, node: onnx.NodeProto, rank: int) -> list[int]:
    """Forward axes the pads refer to (all axes unless the opset-18 axes input lists some)."""
    axes_name = optional_input(node, 3) if ctx.opset >= PAD_AXES_INPUT else None
    if axes_name is None:
        return list(range(rank))
    axes = _int_constant(ctx, axes_name)
    if axes is None:
        raise UnsupportedOpError(f"Pad node {node.name!r}: axes computed at run time are not supported", ["Pad"])
    return [ctx.normalize_axis(a, rank) for a in axes]


def _static_pads(ctx: RuleContext, node: onnx.NodeProto, count: int) -> list[int] | None:
    """The pads [begins..., ends...] of ``count`` axes when known at build time, else None.

    An attribute before opset 11, a constant input from then on; a list of another length than
    two per axis is refused (ModelError).
    """
    if ctx.opset < PADS_AS_INPUT:
        return ints_attribute(node, "pads", REQUIRED, length=2 * count)
    pads = _int_constant(ctx, node.input[1])
    if pads is not None and len(pads) != 2 * count:
        raise ModelError(f"Pad node {node.name!r}: {len(pads)} pads for {count} axes (two per axis expected)")
    return pads


def _check_constant_value(ctx: RuleContext, node: onnx.NodeProto) -> None:
    if ctx.needs_gradient(optional_input(node, 2)):
        raise UnsupportedOpError(
            f"Pad node {node.name!r}: a padding value that depends on the input is not supported", ["Pad"]
        )


def _crop_static(ctx: RuleContext, g: str, rank: int, axes: list[int], pads: list[int]) -> str:
    """VJP of constant padding with known pads: crop what was added, zero-pad what was removed."""
    count = len(axes)
    begins, ends = pads[:count], pads[count:]
    crop_axes = [a for a, b, e in zip(axes, begins, ends, strict=True) if b > 0 or e > 0]
    result = g
    if crop_axes:
        starts = [max(b, 0) for a, b, e in zip(axes, begins, ends, strict=True) if b > 0 or e > 0]
        stops = [-e if e > 0 else INT64_MAX for a, b, e in zip(axes, begins, ends, strict=True) if b > 0 or e > 0]
        result = ctx.slice(result, starts, stops, [a + 1 for a in crop_axes])
    restore_begin = {a: -b for a, b in zip(axes, begins, strict=True) if b < 0}
    restore_end = {a: -e for a, e in zip(axes, ends, strict=True) if e < 0}
    return _pad_lead(ctx, result, rank, restore_begin, restore_end)


def _crop_dynamic(ctx: RuleContext, node: onnx.NodeProto, g: str, rank: int, axes: list[int]) -> str:
    """VJP of constant padding with pads computed at run time (same logic, on tensors)."""
    count = len(axes)
    pads = node.input[1]
    begins = ctx.slice(pads, [0], [count], [0])
    ends = ctx.slice(pads, [count], [2 * count], [0])
    zero = ctx.ints([0])

    def positive_part(values: str) -> str:
        return ctx.emit("Where", [ctx.emit("Greater", [values, zero]), values, zero])

    stops = ctx.emit("Where", [ctx.emit("Greater", [ends, zero]), ctx.emit("Neg", [ends]), ctx.ints([INT64_MAX])])
    cropped = ctx.slice(g, positive_part(begins), stops, [a + 1 for a in axes])
    restore = ctx.emit(
        "Concat", [positive_part(ctx.emit("Neg", [begins])), positive_part(ctx.emit("Neg", [ends]))], axis=0
    )
    if ctx.opset >= PAD_AXES_INPUT:
        return ctx.emit("Pad", [cropped, restore, "", ctx.ints([a + 1 for a in axes])])
    # Before opset 18 the pads cover every axis (axes == range(rank)): add the lead axis' zeros.
    half = ctx.slice(restore, [0], [count], [0]), ctx.slice(restore, [count], [2 * count], [0])
    full = ctx.emit("Concat", [zero, half[0], zero, half[1]], axis=0)
    return ctx.emit("Pad", [cropped, full])


def _fold_borders(ctx: RuleContext, g: str, rank: int, axis: int, n: int, before: int, after: int, mode: str) -> str:
    """VJP of reflect/edge/wrap padding along one axis: add the border cotangents to their sources."""
    lead_axis = [axis + 1]
    parts = [ctx.slice(g, [before], [before + n], lead_axis)]

    def place(piece: str, at_begin: int, at_end: int) -> None:
        parts.append(_pad_lead(ctx, piece, rank, {axis: at_begin}, {axis: at_end}))

    if mode == "edge":
        if before:
            place(ctx.reduce_sum(ctx.slice(g, [0], [before], lead_axis), lead_axis), 0, n - 1)
        if after:
            place(ctx.reduce_sum(ctx.slice(g, [before + n], [INT64_MAX], lead_axis), lead_axis), n - 1, 0)
    elif mode == "reflect":
        if before:  # padded position j < before mirrors input position before - j
            place(ctx.slice(g, [before - 1], [INT64_MIN], lead_axis, [-1]), 1, n - 1 - before)
        if after:  # padded position before + n + t mirrors input position n - 2 - t
            place(ctx.slice(g, [-1], [before + n - 1], lead_axis, [-1]), n - 1 - after, 1)
    else:  # wrap
        if before:  # padded position j < before repeats input position n - before + j
            place(ctx.slice(g, [0], [before], lead_axis), n - before, 0)
        if after:  # padded position before + n + t repeats input position t
            place(ctx.slice(g, [before + n], [INT64_MAX], lead_axis), 0, n - after)
    return ctx.accumulate(parts)


@vjp_rule("Pad")
def pad_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Constant mode: crop the cotangent. Reflect/edge/wrap: also fold the borders back.

    Negative pads (cropping) are supported in constant mode; reflect/edge/wrap need constant,
    non-negative pads and static sizes of the padded axes.
    """
    g = ctx.require_gradient(grads[0], node)
    _check_constant_value(ctx, node)
    data = node.input[0]
    rank = ctx.require_rank(data, node)
    mode = _pad_mode(node)
    axes = _pad_axes(ctx, node, rank)
    pads = _static_pads(ctx, node, len(axes))
    if mode == "constant":
        if pads is None:
            return [_crop_dynamic(ctx, node, g, rank, axes)]
        return [_crop_static(ctx, g, rank, axes, pads)]
    count = len(axes)
    # strict=False: pads may be None (empty lists) here; that is refused just below.
    before_pads, after_pads = (pads or [])[:count], (pads or [])[count:]
    padded = [
        (axis, before, after)
        for axis, before, after in zip(axes, before_pads, after_pads, strict=False)
        if before or after
    ]
    dims = _static_dims(ctx, data, [axis for axis, _, _ in padded])
    if pads is None or dims is None or min(pads) < 0:
        raise UnsupportedOpError(
            f"Pad node {node.name!r}: mode {mode!r} needs constant non-negative pads and static sizes of the "
            "padded axes",
            ["Pad"],
        )
    result = g
    for (axis, before, after), n in zip(padded, dims, strict=True):
        result = _fold_borders(ctx, result, rank, axis, n, before, after, mode)
    return [result]


@jvp_rule("Pad")
def pad_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Pad is linear in the data: pad the tangent the same way (with zeros in constant mode)."""
    (t,) = tangents[:1]
    _check_constant_value(ctx, node)
    data = node.input[0]
    rank = ctx.require_rank(data, node)
    mode = _pad_mode(node)
    axes = _pad_axes(ctx, node, rank)
    pads = _static_pads(ctx, node, len(axes))
    count = len(axes)
    if pads is not None:
        begins = dict(zip(axes, pads[:count], strict=True))
        ends = dict(zip(axes, pads[count:], strict=True))
        return [_pad_lead(ctx, t, rank, begins, ends, mode)]  # type: ignore[arg-type]
    if ctx.opset >= PAD_AXES_INPUT:
        return [ctx.emit("Pad", [t, node.input[1], "", ctx.ints([a + 1 for a in axes])], mode=mode)]  # type: ignore[list-item]
    zero = ctx.ints([0])
    full = ctx.emit(
        "Concat",
        [zero, ctx.slice(node.input[1], [0], [count], [0]), zero, ctx.slice(node.input[1], [count], [2 * count], [0])],
        axis=0,
    )
    return [ctx.emit("Pad", [t, full], mode=mode)]  # type: ignore[list-item]
