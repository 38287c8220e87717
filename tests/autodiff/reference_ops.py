"""Corrections to onnx.reference for the float64 rule checks.

onnx 1.23's ReferenceEvaluator computes Erf (and Gelu's erf) in float32 (np.vectorize(..., otypes="f")) and
implements Softmax/LogSoftmax of every opset with opset-13 semantics (one axis), while before
opset 13 the input is coerced to 2-D at ``axis``. Both would make correct gradient rules fail
a float64 comparison, so the tests run these exact versions instead. Likewise its opset-9
BatchNormalization (applies the training-mode momentum update by default) and its grouped
ConvTranspose (fails on a reshape).
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


class BatchNormalization(OpRun):
    """Inference mode at every opset (onnx's opset-9 version applies the momentum update)."""

    op_domain = ""

    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None, spatial=None):  # type: ignore[override]
        eps = _declared(self, "epsilon")
        eps = 1e-5 if eps is None else eps
        shape = (-1,) + (1,) * (x.ndim - 2)
        y = scale.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) + bias.reshape(shape)
        return (y.astype(x.dtype),)


class ConvTranspose(OpRun):
    """onnx's ConvTranspose, run group by group (its grouped path fails on reshapes)."""

    op_domain = ""

    def _run(self, x, w, b=None, **attributes):  # type: ignore[override]
        from onnx.reference.ops.op_conv_transpose import ConvTranspose as Original

        group = _declared(self, "group") or 1
        kwargs = {name: _declared(self, name) for name in ("auto_pad", "dilations", "kernel_shape", "output_padding", "output_shape", "pads", "strides")}
        kwargs = {name: value for name, value in kwargs.items() if value is not None}
        if isinstance(kwargs.get("auto_pad"), bytes):
            kwargs["auto_pad"] = kwargs["auto_pad"].decode()
        if "output_shape" in kwargs:  # onnx's evaluator fails here: turn it into explicit pads
            kwargs = _pads_for_output_shape(x, w, kwargs)
        run = Original._run
        pieces = []
        for part_x, part_w in zip(np.split(x, group, axis=1), np.split(w, group, axis=0)):
            pieces.append(run(self, part_x, part_w, None, group=1, **kwargs)[0])
        y = np.concatenate(pieces, axis=1)
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return (y.astype(x.dtype),)


def _pads_for_output_shape(x: np.ndarray, w: np.ndarray, kwargs: dict) -> dict:
    """The ONNX spec's split of total_padding (SAME_UPPER: extra at the end, else at the start)."""
    rank = x.ndim - 2
    strides = kwargs.get("strides", [1] * rank)
    dilations = kwargs.get("dilations", [1] * rank)
    extra = kwargs.get("output_padding", [0] * rank)
    kernel = kwargs.get("kernel_shape", w.shape[2:])
    begin, end = [], []
    for i, out in enumerate(kwargs["output_shape"][-rank:]):
        total = strides[i] * (x.shape[i + 2] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1 - out
        if kwargs.get("auto_pad") == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    resolved = {name: value for name, value in kwargs.items() if name not in ("output_shape", "auto_pad")}
    resolved["pads"] = begin + end
    return resolved


class MeanVarianceNormalization(OpRun):
    """(x - mean) / (sqrt(var) + 1e-9) in the input's precision (onnx's function body adds a float32 epsilon)."""

    op_domain = ""

    def _run(self, x, axes=None):  # type: ignore[override]
        axes = tuple(_declared(self, "axes") or (0, 2, 3))
        centred = x - x.mean(axis=axes, keepdims=True)
        return ((centred / (np.sqrt((centred**2).mean(axis=axes, keepdims=True)) + 1e-9)).astype(x.dtype),)


class LpNormalization(OpRun):
    """x / ||x||_p with ||x||_1 = sum |x| (onnx's version sums x itself for p = 1)."""

    op_domain = ""

    def _run(self, x, axis=None, p=None):  # type: ignore[override]
        axis = _declared(self, "axis")
        order = _declared(self, "p") or 2
        norm = np.abs(x).sum(axis=-1 if axis is None else axis, keepdims=True) if order == 1 else np.sqrt((x * x).sum(axis=-1 if axis is None else axis, keepdims=True))
        return ((x / norm).astype(x.dtype),)


EXACT_OPS = [Erf, Gelu, Softmax, LogSoftmax, BatchNormalization, ConvTranspose, MeanVarianceNormalization, LpNormalization]
