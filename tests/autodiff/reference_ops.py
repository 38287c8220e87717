"""Corrections to onnx.reference for the float64 rule checks.

onnx 1.23's ReferenceEvaluator computes Erf (and Gelu's erf) in float32 (np.vectorize(..., otypes="f")) and
implements Softmax/LogSoftmax of every opset with opset-13 semantics (one axis), while before
opset 13 the input is coerced to 2-D at ``axis``. Both would make correct gradient rules fail
a float64 comparison, so the tests run these exact versions instead.
"""

from __future__ import annotations

import math

import numpy as np
from onnx.reference.op_run import OpRun


class Erf(OpRun):
    op_domain = ""

    def _run(self, x):  # type: ignore[override]
        return (_erf(x).astype(x.dtype),)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


class Gelu(OpRun):
    op_domain = ""

    def _run(self, x, approximate="none"):  # type: ignore[override]
        mode = _declared(self, "approximate") or "none"
        if isinstance(mode, bytes):
            mode = mode.decode()
        if mode == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
            return ((0.5 * x * (1 + np.tanh(inner))).astype(x.dtype),)
        return ((0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype),)


def _declared(op: OpRun, name: str):
    """The attribute as written on the node (None when absent), not a schema default."""
    for attr in op.onnx_node.attribute:
        if attr.name == name:
            from onnx import helper

            return helper.get_attribute_value(attr)
    return None


def _softmax_axes(op: OpRun, rank: int, axis: int | None) -> tuple[int, ...]:
    version = op.run_params["opsets"].get("", 21)
    axis = _declared(op, "axis")
    if version >= 13:
        chosen = -1 if axis is None else axis
        return (chosen % rank,)
    chosen = 1 if axis is None else axis
    return tuple(range(chosen % rank, rank))


class Softmax(OpRun):
    op_domain = ""

    def _run(self, x, axis=None):  # type: ignore[override]
        axes = _softmax_axes(self, x.ndim, axis)
        shifted = x - x.max(axis=axes, keepdims=True)
        exp = np.exp(shifted)
        return ((exp / exp.sum(axis=axes, keepdims=True)).astype(x.dtype),)


class LogSoftmax(OpRun):
    op_domain = ""

    def _run(self, x, axis=None):  # type: ignore[override]
        axes = _softmax_axes(self, x.ndim, axis)
        shifted = x - x.max(axis=axes, keepdims=True)
        return ((shifted - np.log(np.exp(shifted).sum(axis=axes, keepdims=True))).astype(x.dtype),)


EXACT_OPS = [Erf, Gelu, Softmax, LogSoftmax]
