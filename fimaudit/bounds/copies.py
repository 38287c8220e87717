"""Which entry of an earlier tensor each entry of a tensor copies, through a chain of data movement.

Why: a layer fed only by copies of a smaller tensor (torchvision's VGG below 224 x 224 repeats a
1 x 1 map 49 times before its first classifier layer) is bounded on the span of those copies
(``rules/dense._restricted``): exact where the plain spectral norm is up to sqrt(copies) loose,
and a Gram matrix 49 times smaller. Exporters spell the repetition differently: a nearest
Resize (TorchScript), or Transpose, GatherND with constant indices, Transpose and a ReduceMean
over one-element windows (dynamo). Rather than one pattern per exporter, the chain of ops that
only move entries is run once on the flat positions 0 .. n-1 of its start (onnx's reference
runtime, float64: positions below 2^53 stay exact), and each output then names its source.

A reduction moves entries only when each window holds copies of one entry; that is checked by
running the chain twice more with every Reduce* replaced by ReduceMax and ReduceMin (same axes):
equal results mean every window's entries are equal, so the mean, maximum or minimum is a copy.
ReduceSum (a scaled copy) is not followed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fimaudit.graph.view import GraphView

#: Ops whose outputs are copies of their first input's entries, given constant other inputs.
MOVING = frozenset({
    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Gather", "GatherND", "Expand",
    "Tile", "Resize",
})
#: Reductions that are copies when every window holds one entry's copies (checked, see above).
REDUCING = frozenset({"ReduceMean", "ReduceMax", "ReduceMin"})
#: The largest tensor of a chain followed (32 MiB in float64); positions stay exact below 2^53.
MAX_ENTRIES = 1 << 22


def copy_sources(view: GraphView, name: str) -> tuple[str, np.ndarray] | None:
    """(start tensor, flat index into it for each entry of ``name``), or None where not a pure copy.

    Follows producers back from ``name`` while they only move entries (MOVING, REDUCING) with
    constant non-data inputs; the start is where that stops. None when nothing repeats an entry
    (no restriction to gain), a shape is unknown or large, or the reference runtime refuses a node.
    """
    chain: list[onnx.NodeProto] = []
    node = view.producer.get(name)
    while node is not None and _moves_entries(view, node):
        chain.append(node)
        node = view.producer.get(node.input[0])
    if not chain:
        return None
    chain.reverse()
    start = chain[0].input[0]
    # Every tensor of the chain is evaluated in float64: each must have a known, modest size (a
    # hostile Expand to 10^10 entries and a Gather back must not be run here).
    if not all(_modest(view.shape(tensor)) for tensor in [start, *(node.output[0] for node in chain)]):
        return None
    shape = view.shape(start)
    assert shape is not None
    positions = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    try:
        out = _run(view, chain, start, name, positions, None)
        reduces = any(node.op_type in REDUCING for node in chain)
        if reduces and not all(
            np.array_equal(out, _run(view, chain, start, name, positions, op)) for op in ("ReduceMax", "ReduceMin")
        ):
            return None
    except Exception:  # the reference runtime refuses an attribute or shape: no certified copy map
        return None
    flat = np.asarray(out, dtype=np.float64).reshape(-1)
    if flat.size == 0 or not np.array_equal(flat, np.round(flat)) or flat.min() < 0 or flat.max() >= positions.size:
        return None
    sources = flat.astype(np.int64)
    if np.unique(sources).size == sources.size:
        return None  # a permutation: the plain norm is already exact
    return start, sources


def _modest(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape) and int(np.prod(shape)) <= MAX_ENTRIES


def _moves_entries(view: GraphView, node: onnx.NodeProto) -> bool:
    if node.op_type not in MOVING and node.op_type not in REDUCING:
        return False
    if node.op_type == "Resize":
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attributes.get("mode", b"nearest")
        transform = attributes.get("coordinate_transformation_mode", b"half_pixel")
        if mode != b"nearest" or transform == b"tf_crop_and_resize":
            return False
    data_outputs = [o for o in node.output if o]
    if len(data_outputs) != 1:
        return False
    return all(not name or view.const(name) is not None for name in node.input[1:])


def _run(view: GraphView, chain: list[onnx.NodeProto], start: str, end: str, positions: np.ndarray,
         reduce_as: str | None) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    nodes = []
    for node in chain:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if reduce_as is not None and copy.op_type in REDUCING:
            copy.op_type = reduce_as
        nodes.append(copy)
    constants = {n: view.const(n) for node in chain for n in node.input[1:] if n}
    graph = helper.make_graph(
        nodes, "copies", [helper.make_tensor_value_info(start, TensorProto.DOUBLE, list(positions.shape))],
        [helper.make_tensor_value_info(end, TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(np.asarray(value), key) for key, value in constants.items() if value is not None],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(view.opset, 11))])
    (out,) = ReferenceEvaluator(model).run(None, {start: positions})
    return np.asarray(out)
