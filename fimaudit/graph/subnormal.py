"""Subnormal (denormal) weights: find them, and flush them to zero when the user asks.

Why: some exported models carry weights below the smallest normal float (|w| < 1.2e-38 in
float32), left over from training with weight decay or from pruning. On x86 CPUs every
multiplication that reads or produces a subnormal takes a slow microcode path, which can make
inference many times slower; an audit runs the model thousands of times. Their contribution to any
output is below float32 resolution, so setting them to zero changes the logits by less than one
rounding error per product: fimaudit warns and flushes only on request (``--flush-subnormals``),
because the audited model must otherwise be exactly the file the user gave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


@dataclass
class SubnormalReport:
    """How many weights are subnormal, and in which tensors (name, count), largest first."""

    count: int = 0
    total: int = 0
    tensors: list[tuple[str, int]] = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        """'12 of 2,410 weights, in 2 tensors (fc.weight: 10, fc.bias: 2)'."""
        named = ", ".join(f"{name}: {count:,}" for name, count in self.tensors[:limit])
        more = f", {len(self.tensors) - limit} more" if len(self.tensors) > limit else ""
        plural = "s" if len(self.tensors) != 1 else ""
        return f"{self.count:,} of {self.total:,} weights, in {len(self.tensors)} tensor{plural} ({named}{more})"


@dataclass
class _Weights:
    """One stored array of float weights: a tensor, or a float-list attribute (ai.onnx.ml ops)."""

    name: str
    values: np.ndarray
    store: Callable[[np.ndarray], None]


def _tensor_weights(tensor: onnx.TensorProto, fallback: str) -> _Weights | None:
    if tensor.data_type not in _FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    name = tensor.name or fallback

    def store(values: np.ndarray) -> None:
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))

    return _Weights(name, numpy_helper.to_array(tensor), store)


def _list_weights(node: onnx.NodeProto, attribute: onnx.AttributeProto) -> _Weights:
    def store(values: np.ndarray) -> None:
        del attribute.floats[:]
        attribute.floats.extend(values.tolist())

    return _Weights(
        f"{node.name or node.op_type}.{attribute.name}", np.array(attribute.floats, dtype=np.float32), store
    )


def _weights(graph: onnx.GraphProto) -> Iterator[_Weights]:
    """Float weights of ``graph`` and its subgraphs: initializers, Constant values, float lists."""
    for index, tensor in enumerate(graph.initializer):
        found = _tensor_weights(tensor, f"initializer #{index}")
        if found:
            yield found
    for node in graph.node:
        for attribute in node.attribute:
            tensors = [attribute.t] if attribute.type == onnx.AttributeProto.TENSOR else []
            if attribute.type == onnx.AttributeProto.TENSORS:
                tensors = list(attribute.tensors)
            for tensor in tensors:
                found = _tensor_weights(tensor, f"{node.name or node.op_type}.{attribute.name}")
                if found:
                    yield found
            if attribute.type == onnx.AttributeProto.FLOATS and len(attribute.floats):
                yield _list_weights(node, attribute)
            elif attribute.type == onnx.AttributeProto.GRAPH:
                yield from _weights(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _weights(subgraph)


def subnormal_mask(values: np.ndarray) -> np.ndarray:
    """True where a float array holds a non-zero value below the dtype's smallest normal."""
    magnitude = np.abs(values)
    return (magnitude > 0) & (magnitude < np.finfo(values.dtype).tiny)


def find_subnormals(model: onnx.ModelProto) -> SubnormalReport:
    """Count the subnormal values among the model's float weights (external data must be loaded)."""
    report = SubnormalReport()
    for weights in _weights(model.graph):
        report.total += int(weights.values.size)
        found = int(subnormal_mask(weights.values).sum())
        if found:
            report.count += found
            report.tensors.append((weights.name, found))
    report.tensors.sort(key=lambda item: -item[1])
    return report


def flush_subnormals(model: onnx.ModelProto) -> SubnormalReport:
    """Set every subnormal weight of ``model`` to zero, in place; returns what was flushed."""
    report = find_subnormals(model)
    if not report.count:
        return report
    for weights in _weights(model.graph):
        mask = subnormal_mask(weights.values)
        if mask.any():
            weights.store(np.where(mask, np.zeros((), weights.values.dtype), weights.values))
    logger.info("flushed %s to zero", report.summary())
    return report
