"""Exact lambda_max in float64: the model converted to double, run by onnx's ReferenceEvaluator,
differentiated by central differences with a step small enough that the error (~1e-9 relative)
cannot hide a bound violation.

Why not the audit's own float32 finite differences: their error (~1e-3 relative) is larger than
a tight bound's margin; a bound check against them would need a tolerance, and a tolerance
would hide real violations.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from scipy import special

from fimaudit.fisher.exact import exact_lambda_max

_FLOAT = TensorProto.FLOAT
_DOUBLE = TensorProto.DOUBLE


def _retype_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type != _FLOAT:
        return tensor
    array = numpy_helper.to_array(tensor).astype(np.float64)
    return numpy_helper.from_array(array, tensor.name)


def _retype_value(value: onnx.ValueInfoProto) -> None:
    if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type == _FLOAT:
        value.type.tensor_type.elem_type = _DOUBLE


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float64 (weights are float32 values, exactly representable)."""
    double = copy.deepcopy(model)
    graph = double.graph
    converted = [_retype_tensor(init) for init in graph.initializer]
    del graph.initializer[:]
    graph.initializer.extend(converted)
    for value in [*graph.input, *graph.output]:
        _retype_value(value)
    del graph.value_info[:]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(_retype_tensor(attribute.t))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == _FLOAT:
                attribute.i = _DOUBLE
            if node.op_type == "Constant" and attribute.name == "value_float":
                pass  # float attribute scalars are exact in double too; Constant keeps float32 type
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name in ("value_float", "value_floats"):
                    value = np.array(helper.get_attribute_value(attribute), dtype=np.float64)
                    del node.attribute[:]
                    node.attribute.extend([helper.make_attribute("value", numpy_helper.from_array(value))])
                    break
    return double


class Erf(OpRun):
    """onnx's reference Erf rounds to float32 (np.vectorize(erf, otypes="f")): not here."""

    def _run(self, x):  # noqa: D102
        return (special.erf(x).astype(x.dtype),)


class Gelu(OpRun):
    """Gelu (opset 20) in the input's precision."""

    def _run(self, x, approximate="none"):  # noqa: D102
        if approximate == "tanh":
            inner = np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)
            return ((0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype),)
        return ((0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))).astype(x.dtype),)


class Reference64:
    """Float64 logits and dense Jacobians of a (logits) model."""

    def __init__(self, model: onnx.ModelProto, input_name: str, output_name: str, batch_one: bool = False) -> None:
        self.evaluator = ReferenceEvaluator(to_float64(model), new_ops=[Erf, Gelu])
        self.input_name = input_name
        self.output_name = output_name
        self.batch_one = batch_one

    def logits(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        if self.batch_one:
            return np.concatenate([self._run(rows[i : i + 1]) for i in range(rows.shape[0])])
        return self._run(rows)

    def _run(self, rows: np.ndarray) -> np.ndarray:
        (out,) = self.evaluator.run([self.output_name], {self.input_name: rows})
        return np.asarray(out, dtype=np.float64).reshape(rows.shape[0], -1)

    def jacobian(self, sample: np.ndarray, step: float = 1e-6) -> np.ndarray:
        flat = np.asarray(sample, dtype=np.float64).reshape(-1)
        d = flat.size
        eye = np.eye(d) * step
        plus = (flat[None] + eye).reshape(d, *sample.shape)
        minus = (flat[None] - eye).reshape(d, *sample.shape)
        values = self.logits(np.concatenate([plus, minus]))
        return ((values[:d] - values[d:]) / (2.0 * step)).T

    def lambda_max(self, sample: np.ndarray) -> float:
        logits = self.logits(np.asarray(sample)[None])[0]
        return exact_lambda_max(self.jacobian(sample), logits, with_eigenvector=False).value
