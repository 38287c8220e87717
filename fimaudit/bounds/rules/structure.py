"""Ops that move, select, copy or join entries: reshapes, selections, concatenation, broadcasting.

Permuting or relabelling entries is an isometry (gain 1); dropping entries can only shrink
the norm (gain 1); copying an entry c times multiplies its contribution by sqrt(c); joining
inputs into disjoint parts of the output (Concat) combines their constants in l2:
||[da, db]|| = sqrt(||da||^2 + ||db||^2) <= sqrt(L_a^2 + L_b^2) ||dx||, the dense block's
sqrt(1 + L_f^2).
"""

from __future__ import annotations

import math

import numpy as np

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import broadcast_copies, certify
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound


def _data_only(ctx: NodeContext) -> None:
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: only its data input may depend on the input")


@layer_bound("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "DepthToSpace", "SpaceToDepth")
def rearrange_bound(ctx: NodeContext) -> LayerGain:
    """A rearrangement of entries: an isometry."""
    _data_only(ctx)
    return LayerGain({0: 1.0}, "rearranges entries", magnitude=ctx.magnitude(0))


@layer_bound("Dropout")
def dropout_bound(ctx: NodeContext) -> LayerGain:
    """Inference dropout is the identity (training mode is refused)."""
    _data_only(ctx)
    training = ctx.const(2) if len(ctx.node.input) > 2 and ctx.node.input[2] else None
    if training is not None and bool(np.asarray(training).reshape(())):
        raise BoundUnavailable(f"Dropout node {ctx.name!r} runs in training mode")
    return LayerGain({0: 1.0}, "identity at inference", magnitude=ctx.magnitude(0))


@layer_bound("Cast")
def cast_bound(ctx: NodeContext) -> LayerGain:
    """Between float types: the identity in exact arithmetic. To integers: not Lipschitz."""
    _data_only(ctx)
    target = ctx.attr_int("to", 1)
    if target not in (1, 10, 11, 16):  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
        raise BoundUnavailable(f"Cast node {ctx.name!r} casts an input-dependent tensor to a non-float type")
    return LayerGain({0: 1.0}, "float-to-float cast", magnitude=ctx.magnitude(0))


@layer_bound("Slice", "Split")
def select_bound(ctx: NodeContext) -> LayerGain:
    """Selecting distinct entries (a Split's outputs each select from the input)."""
    _data_only(ctx)
    return LayerGain({0: 1.0}, "selects entries", magnitude=ctx.magnitude(0))


@layer_bound("Gather")
def gather_bound(ctx: NodeContext) -> LayerGain:
    """Constant indices: sqrt(largest number of times one entry is gathered)."""
    _data_only(ctx)
    indices = ctx.require_const(1, "the indices").astype(np.int64).reshape(-1)
    shape = ctx.shape(0)
    axis = ctx.attr_int("axis", 0) % len(shape)
    normal = np.where(indices < 0, indices + shape[axis], indices)
    repeats = int(np.bincount(normal, minlength=1).max()) if normal.size else 0
    return LayerGain(
        {0: certify(math.sqrt(repeats))}, f"gathers each entry at most {repeats} time(s)", magnitude=ctx.magnitude(0)
    )


@layer_bound("Concat")
def concat_bound(ctx: NodeContext) -> LayerGain:
    """Inputs land in disjoint parts of the output: l2 combination."""
    gains = {index: 1.0 for index in ctx.varying_inputs()}
    magnitude = max((ctx.magnitude(i) for i in range(len(ctx.node.input)) if ctx.has_input(i)), default=0.0)
    return LayerGain(gains, "disjoint parts: sqrt(sum of squares)", combine="l2", magnitude=magnitude)


@layer_bound("Pad")
def pad_bound(ctx: NodeContext) -> LayerGain:
    """Constant padding adds fixed entries (gain 1); reflect/edge copy entries (refused)."""
    _data_only(ctx)
    mode = ctx.attr_str("mode", "constant") or "constant"
    if mode != "constant":
        raise BoundUnavailable(f"Pad node {ctx.name!r}: mode {mode!r} copies entries; only constant padding has a rule")
    pad_value = ctx.const(2) if len(ctx.node.input) > 2 and ctx.node.input[2] else None
    fill = float(np.abs(pad_value).max()) if pad_value is not None and pad_value.size else abs(
        ctx.attr_float("value", 0.0)
    )
    return LayerGain({0: 1.0}, "constant padding", magnitude=max(ctx.magnitude(0), fill))


@layer_bound("Expand", "Tile")
def copy_bound(ctx: NodeContext) -> LayerGain:
    """Every entry is copied the same number of times c: gain sqrt(c)."""
    _data_only(ctx)
    copies = broadcast_copies(ctx.shape(0), ctx.output_shape())
    return LayerGain({0: certify(math.sqrt(copies))}, f"copies each entry {copies} time(s)", magnitude=ctx.magnitude(0))


@layer_bound("GatherND")
def gather_nd_bound(ctx: NodeContext) -> LayerGain:
    """Constant indices: sqrt(largest number of times one slice is gathered)."""
    _data_only(ctx)
    indices = ctx.require_const(1, "the indices").astype(np.int64)
    shape = ctx.shape(0)
    batch_dims = ctx.attr_int("batch_dims", 0) or 0
    depth = indices.shape[-1]
    sizes = np.array(shape[batch_dims : batch_dims + depth], dtype=np.int64)
    batches = int(np.prod(indices.shape[:batch_dims])) if batch_dims else 1
    tuples = np.where(indices < 0, indices + sizes, indices).reshape(batches, -1, depth)
    repeats = 0
    for group in tuples:
        if group.size:
            _, counts = np.unique(group, axis=0, return_counts=True)
            repeats = max(repeats, int(counts.max()))
    return LayerGain(
        {0: certify(math.sqrt(repeats))}, f"gathers each slice at most {repeats} time(s)", magnitude=ctx.magnitude(0)
    )


@layer_bound("Resize")
def resize_bound(ctx: NodeContext) -> LayerGain:
    """Nearest-neighbour resizing copies entries: sqrt(largest number of copies of one entry).

    Which entry each output copies is read off by resizing a tensor of entry numbers with the
    node's own attributes and scales/sizes (onnx's reference runtime), so every coordinate
    transformation and rounding mode is counted exactly. Linear and cubic modes have no rule.
    """
    sources = resize_sources(ctx)
    copies = int(np.bincount(sources, minlength=1).max())
    return LayerGain({0: certify(math.sqrt(copies))}, f"nearest resize copies each entry at most {copies} time(s)",
                     magnitude=ctx.magnitude(0))


def resize_sources(ctx: NodeContext) -> np.ndarray:
    """For a nearest Resize, the input entry (flat index) each output entry copies, flat.

    BoundUnavailable for other modes, scales or sizes computed at run time, or attributes the
    reference runtime refuses.
    """
    _data_only(ctx)
    mode = ctx.attr_str("mode", "nearest") or "nearest"
    if mode != "nearest":
        raise BoundUnavailable(f"Resize node {ctx.name!r}: mode {mode!r} has no bound rule (only nearest)")
    shape = ctx.shape(0)
    extra = {}
    for index in range(1, len(ctx.node.input)):
        if ctx.has_input(index):
            value = ctx.const(index)
            if value is None:
                raise BoundUnavailable(f"Resize node {ctx.name!r}: its scales or sizes are computed at run time")
            extra[ctx.input_name(index)] = value
    return _resize_entries(ctx.node, shape, extra, ctx.view.opset)


def _resize_entries(node, shape: tuple[int, ...], constants: dict[str, np.ndarray], opset: int) -> np.ndarray:
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    data = "fimaudit_resize_entries"
    inputs = [data] + list(node.input[1:])
    probe = helper.make_node("Resize", inputs, ["out"])
    probe.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [probe], "resize_copies", [helper.make_tensor_value_info(data, TensorProto.DOUBLE, list(shape))],
        [helper.make_tensor_value_info("out", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 11))])
    entries = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    try:
        (out,) = ReferenceEvaluator(model).run(None, {data: entries})
    except Exception as exc:  # the reference runtime refuses the attributes: no certified count
        raise BoundUnavailable(f"Resize node {node.name!r}: cannot count its copies ({exc})") from exc
    flat = np.asarray(out, dtype=np.float64).reshape(-1)
    sources = flat.astype(np.int64)
    if flat.size and not (np.array_equal(sources, flat) and sources.min() >= 0 and sources.max() < entries.size):
        # An output that is no input entry (an extrapolation value): not a pure copy.
        raise BoundUnavailable(f"Resize node {node.name!r}: an output is not a copy of an input entry")
    return sources
