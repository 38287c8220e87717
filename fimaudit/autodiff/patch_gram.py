"""A patch embedding's Gram in the fused Gram model: its adjoint then itself, folded into one 1x1 Conv.

Why: in the fused model (fused_gram.py) the VJP half ends with the adjoint of the model's first
layer, and the JVP half starts with that layer. For a ViT's patch embedding, a Conv whose stride
is its kernel (patches that do not overlap), the pair is ConvTranspose(g, W), a tensor of the
input's size, then Conv(., W); per patch that is g -> W W^T g, one 1x1 Conv by the C x C matrix
W W^T (C: the embedding's channels) that never makes the input-sized tensor. Measured alone in
ONNX Runtime (``benchmarks/README.md``; 96 channels, 16 x 16 patches of 3x224x224, 2 threads):
0.37-0.64 ms for the pair, 0.03-0.06 ms for the 1x1 Conv, against 4.6-5.4 ms for the small ViT's
whole fused run.

Exactness: Conv(ConvTranspose(g, W), W)[o, p] = sum over c and the kernel offsets a of
W[o, c, a] W[o', c, a] g[o', p] = (W W^T g)[o, p], because without overlap every input position
belongs to exactly one patch (ConvTranspose writes (h - 1) k + k = h k positions, the Conv reads
them all back). The Reshapes between the two only split and merge the leading rows (row-major,
so their composition leaves the tensor as it was). ``GraphJacobian`` still compares the folded
model's first product with the two halves' before it keeps it.

Where anything differs (overlap, padding, dilation, groups, a bias, an output shape, any other
reader of the tensors in between), the model is left as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fimaudit.graph.onnx_utils import attributes_of
from fimaudit.graph.tensors import drop_unread

#: Prefix of the tensors and nodes the fold adds.
FOLD_PREFIX = "fimaudit_patch_gram/"


def _non_overlapping(node: onnx.NodeProto, kernel: tuple[int, ...], transposed: bool) -> bool:
    """A Conv / ConvTranspose by a weight of spatial ``kernel`` whose patches tile without overlap or padding."""
    attributes: dict[str, Any] = attributes_of(node)
    spatial = len(kernel)
    allowed = {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"}
    if transposed:
        allowed.add("output_padding")
    if set(attributes) - allowed or (len(node.input) > 2 and node.input[2]):
        return False  # output_shape, a bias or anything unknown
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    return (
        (auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)) == "NOTSET"
        and list(attributes.get("kernel_shape", kernel)) == list(kernel)
        and list(attributes.get("strides", [1] * spatial)) == list(kernel)
        and all(pad == 0 for pad in attributes.get("pads", []))
        and all(step == 1 for step in attributes.get("dilations", []))
        and attributes.get("group", 1) == 1
        and all(pad == 0 for pad in attributes.get("output_padding", []))
    )


def fold_patch_gram(
    model: onnx.ModelProto,
    weights: Mapping[str, onnx.TensorProto],
    vjp_result: str,
    seed: str,
    sample_dims: tuple[int, ...],
) -> tuple[onnx.ModelProto, onnx.TensorProto] | None:
    """The fused model with its patch embedding's Gram folded, and the W W^T weight to add; or None.

    ``weights``: the initializers held beside the model (its own are looked up too).

    ``vjp_result``: the VJP half's result inside the fused model, [M, B, *sample_dims];
    ``seed``: the cotangent input, [M, B, K], whose leading dims stand in for the result's
    wherever a Shape node read them.
    """
    graph = model.graph
    every = list(graph.node)  # one list, so that nodes compare by identity below
    names = {name for node in every for name in [*node.input, *node.output]}
    names |= {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer} | set(weights)
    if any(name.startswith(FOLD_PREFIX) for name in names):
        return None  # the model's own names could meet the fold's
    producer = {output: node for node in every for output in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in every:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}

    # The VJP's end: ConvTranspose(g, W), then only Reshape / Identity, each the only reader of the
    # last but for Shape nodes (the Reshapes' targets; checked below to be left unread).
    chain = []
    name = vjp_result
    while (node := producer.get(name)) is not None and node.op_type in ("Reshape", "Identity"):
        chain.append(node)
        name = node.input[0]
        if [reader for reader in readers.get(name, []) if reader.op_type != "Shape"] != [node] or name in outputs:
            return None
    transpose = producer.get(name)
    known = {**{tensor.name: tensor for tensor in graph.initializer}, **weights}
    if transpose is None or transpose.op_type != "ConvTranspose" or transpose.input[1] not in known:
        return None
    weight = known[transpose.input[1]]
    if weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) < 3:
        return None
    kernel = tuple(int(d) for d in weight.dims[2:])
    if not _non_overlapping(transpose, kernel, transposed=True) or len(sample_dims) != 1 + len(kernel):
        return None

    # The JVP's start: Shape nodes, and one Reshape whose only reader is the Conv by the same W.
    shapes = [node for node in readers.get(vjp_result, []) if node.op_type == "Shape"]
    others = [node for node in readers.get(vjp_result, []) if node.op_type != "Shape"]
    if len(others) != 1 or others[0].op_type != "Reshape" or vjp_result in outputs:
        return None
    if any(node.attribute for node in shapes):  # start / end: not worth the cases
        return None
    reshape = others[0]
    conv_readers = readers.get(reshape.output[0], [])
    if len(conv_readers) != 1 or reshape.output[0] in outputs:
        return None
    conv = conv_readers[0]
    if conv.op_type != "Conv" or conv.input[0] != reshape.output[0] or conv.input[1] != transpose.input[1]:
        return None
    if not _non_overlapping(conv, kernel, transposed=False):
        return None

    values = numpy_helper.to_array(weight).astype(np.float64).reshape(weight.dims[0], -1)
    gram = numpy_helper.from_array(
        (values @ values.T).astype(np.float32).reshape(weight.dims[0], weight.dims[0], *([1] * len(kernel))),
        FOLD_PREFIX + "weight",
    )
    # Each replaced node gives way to its replacement in its own place: the order stays topological.
    instead: dict[int, list[onnx.NodeProto]] = {id(node): [] for node in [transpose, *chain, reshape]}
    instead[id(conv)] = [helper.make_node("Conv", [transpose.input[0], gram.name], [conv.output[0]],
                                          name=FOLD_PREFIX + "Conv", kernel_shape=[1] * len(kernel))]
    lead, trailing, starts, ends = (FOLD_PREFIX + part for part in ("lead", "trailing", "starts", "ends"))
    if shapes:
        # [M, B] from the cotangent, the sample's dims from the type: the result's shape, computed without it.
        instead[id(shapes[0])] = [
            helper.make_node("Shape", [seed], [FOLD_PREFIX + "seed_shape"], name=FOLD_PREFIX + "Shape"),
            helper.make_node("Slice", [FOLD_PREFIX + "seed_shape", starts, ends], [lead], name=FOLD_PREFIX + "Slice"),
            helper.make_node("Concat", [lead, trailing], [shapes[0].output[0]], name=FOLD_PREFIX + "Concat", axis=0),
        ]
        for node in shapes[1:]:
            instead[id(node)] = [helper.make_node("Identity", [shapes[0].output[0]], [node.output[0]],
                                                  name=FOLD_PREFIX + node.name)]
    nodes = [new for node in every for new in instead.get(id(node), [node])]
    drop_unread(nodes, outputs)  # the reshape targets and Shapes of the replaced chain
    available = {value.name for value in graph.input} | set(known) | {gram.name, trailing, starts, ends, ""}
    available |= {name for node in nodes for name in node.output}
    if any(name not in available for node in nodes for name in node.input):
        return None  # something else read a tensor the fold removes (a Shape of the chain's)
    nodes = [copy.deepcopy(node) for node in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    if shapes:
        graph.initializer.extend([
            numpy_helper.from_array(np.array(sample_dims, dtype=np.int64), trailing),
            numpy_helper.from_array(np.array([0], dtype=np.int64), starts),
            numpy_helper.from_array(np.array([2], dtype=np.int64), ends),
        ])
    return model, gram
