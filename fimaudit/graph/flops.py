"""Sizes of one forward pass from the shapes the loader inferred: its kernels' multiply-adds, its largest tensor.

Why: ONNX Runtime splits each kernel over its threads, and for small kernels the split costs
more than it saves; ``ort_threads.prefer_row_parallel`` then runs gradient rows in concurrent
single-threaded chunks instead. Only the linear ops are counted (Conv, ConvTranspose, MatMul,
Gemm): nearly all of a classifier's arithmetic, and the kernels that parallelise well when large.
The largest activation decides ONNX Runtime's memory pattern (``runtime.create_session``).

An estimate for a speed choice, never for a result: a dimension shape inference could not
resolve (a symbolic batch, a shape computed at run time) counts as 1, so a model with unknown
shapes looks small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from fimaudit.graph.onnx_utils import element_size

_LINEAR = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every typed tensor's shape, unknown and symbolic dimensions as 1."""
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [dim.dim_value or 1 for dim in value.type.tensor_type.shape.dim]
    for tensor in graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


def _attribute(node: onnx.NodeProto, name: str) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == name), 0)


def _node_flops(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> float:
    """2 x multiply-adds of one linear node, 0 when a shape it needs is unknown."""
    out = shapes.get(node.output[0]) if node.output else None
    first = shapes.get(node.input[0]) if node.input else None
    second = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if node.op_type == "Conv" and out and second:
        return 2.0 * math.prod(out) * math.prod(second[1:])
    if node.op_type == "ConvTranspose" and first and second:
        return 2.0 * math.prod(first) * math.prod(second[1:])
    if node.op_type == "Gemm" and out and first and len(first) == 2:
        return 2.0 * math.prod(out) * first[0 if _attribute(node, "transA") else 1]
    if node.op_type == "MatMul" and out and (first or second):
        inner = first[-1] if first else second[-2] if second and len(second) >= 2 else 1
        return 2.0 * math.prod(out) * inner
    return 0.0


@dataclass(frozen=True)
class LinearWork:
    """The linear ops of one forward pass: their FLOPs (2 x multiply-adds) and how many they are."""

    flops: float
    nodes: int

    @property
    def mean_flops(self) -> float:
        """FLOPs of the average linear kernel: what decides whether splitting one over threads pays."""
        return self.flops / self.nodes if self.nodes else 0.0


def linear_work(model: onnx.ModelProto) -> LinearWork:
    """The main graph's linear ops with a known size, unknown dimensions as 1 (see the module doc)."""
    shapes = _shapes(model)
    sizes = [_node_flops(node, shapes) for node in model.graph.node if node.op_type in _LINEAR and not node.domain]
    known = [size for size in sizes if size > 0]
    return LinearWork(float(sum(known)), len(known))


def largest_activation_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's largest typed tensor at batch 1 (unknown dimensions as 1), weights excluded."""
    graph = model.graph
    weights = {tensor.name for tensor in graph.initializer}
    largest = 0
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if value.name in weights or not tensor_type.HasField("shape") or not tensor_type.elem_type:
            continue
        itemsize = element_size(tensor_type.elem_type)
        if itemsize is None:  # strings and types numpy has no dtype for: not activations worth counting
            continue
        largest = max(largest, itemsize * math.prod(dim.dim_value or 1 for dim in tensor_type.shape.dim))
    return largest
