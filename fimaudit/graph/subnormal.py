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
from dataclasses import dataclass, field
from typing import Iterator

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


def _weight_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant-node values of ``graph`` and of its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from attribute.tensors
            elif attribute.type == onnx.AttributeProto.GRAPH:
                yield from _weight_tensors(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _weight_tensors(subgraph)


def subnormal_mask(values: np.ndarray) -> np.ndarray:
    """True where a float array holds a non-zero value below the dtype's smallest normal."""
    magnitude = np.abs(values)
    return (magnitude > 0) & (magnitude < np.finfo(values.dtype).tiny)


def _float_array(tensor: onnx.TensorProto) -> np.ndarray | None:
    if tensor.data_type not in _FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return numpy_helper.to_array(tensor)


def find_subnormals(model: onnx.ModelProto) -> SubnormalReport:
    """Count the subnormal values among the model's float weights (external data must be loaded)."""
    report = SubnormalReport()
    for index, tensor in enumerate(_weight_tensors(model.graph)):
        values = _float_array(tensor)
        if values is None:
            continue
        report.total += int(values.size)
        found = int(subnormal_mask(values).sum())
        if found:
            report.count += found
            report.tensors.append((tensor.name or f"constant #{index}", found))
    report.tensors.sort(key=lambda item: -item[1])
    return report


def flush_subnormals(model: onnx.ModelProto) -> SubnormalReport:
    """Set every subnormal weight of ``model`` to zero, in place; returns what was flushed."""
    report = find_subnormals(model)
    if not report.count:
        return report
    for tensor in _weight_tensors(model.graph):
        values = _float_array(tensor)
        if values is None:
            continue
        mask = subnormal_mask(values)
        if mask.any():
            flushed = np.where(mask, np.zeros((), values.dtype), values)
            tensor.CopyFrom(numpy_helper.from_array(flushed, tensor.name))
    logger.info("flushed %s to zero", report.summary())
    return report
