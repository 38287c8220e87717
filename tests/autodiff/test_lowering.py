"""The lowering pass (fimaudit/autodiff/lowering/): control flow and the RNN family rewritten into
ops with gradient rules, checked against the original model.

Per case (models in lowering_models.py):
1. Forward: the lowered model equals the original in float64 (onnx's ReferenceEvaluator runs the
   lowered model; the original runs in the ReferenceEvaluator, or in ONNX Runtime at float64 where
   the evaluator lacks the form: Loop scan outputs, reverse Scan directions, RNN's Relu) to 1e-12,
   and in float32 on ONNX Runtime to 1e-5 relative (against the original on ONNX Runtime, or the
   float64 reference where ONNX Runtime lacks the form: layout 1 recurrent ops).
2. Gradients: the VJP and JVP graphs the builder derives (through the lowering) satisfy the
   adjoint identity to 1e-9, the JVP equals float64 central differences of the ORIGINAL model to
   1e-6, and the float32 ONNX Runtime gradient graphs equal the float64 ones to 1e-4.
3. A CLI audit of a small LSTM classifier exits 0 with graph gradients.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.autodiff.build import COTANGENT, TANGENT, build_jvp_model, build_vjp_model
from fimaudit.autodiff.lowering import MAX_UNROLLED_NODES, lower_for_gradients, lowered_ops
from fimaudit.cli import main
from fimaudit.errors import UnsupportedOpError
from tests.autodiff import lowering_models as models

LEAD = 3
CONSTRUCTS = {"If", "Loop", "Scan", "LSTM", "GRU", "RNN"}


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[type], onnx.ModelProto]
    #: Which engine runs the original model at float64: "reference" (onnx's ReferenceEvaluator),
    #: "ort" (ONNX Runtime), or "none" (neither can: the evaluator ignores the ``activations``
    #: attribute and ORT's RNN/GRU have no float64 kernel; the float64 checks then use the lowered
    #: model and the float32 check against the original on ONNX Runtime carries the comparison).
    original64: str = "reference"
    #: ONNX Runtime can run the original model (layout 1 recurrent ops: it cannot).
    ort_runs_original: bool = True


def _recurrent(op: str, **options: object) -> Callable[[type], onnx.ModelProto]:
    return lambda dtype: models.recurrent(op, dtype, **options)


CASES = [
    Case("LSTM/forward/peepholes", _recurrent("LSTM", peepholes=True)),
    Case("LSTM/reverse/no-bias-no-initial", _recurrent("LSTM", direction="reverse", bias=False, initial=False)),
    Case("LSTM/bidirectional/layout1/peepholes", _recurrent("LSTM", direction="bidirectional", layout=1, peepholes=True), ort_runs_original=False),
    Case("LSTM/forward/activations", _recurrent("LSTM", activations=["Sigmoid", "Tanh", "Relu"]), original64="none"),
    Case("GRU/forward", _recurrent("GRU")),
    Case("GRU/reverse/linear-before-reset", _recurrent("GRU", direction="reverse", linear_before_reset=1)),
    Case("GRU/bidirectional/layout1/no-initial", _recurrent("GRU", direction="bidirectional", layout=1, initial=False), ort_runs_original=False),
    Case("GRU/bidirectional/linear-before-reset/no-initial", _recurrent("GRU", direction="bidirectional", linear_before_reset=1, initial=False)),
    Case("RNN/forward", _recurrent("RNN")),
    Case("RNN/bidirectional/relu-tanh", _recurrent("RNN", direction="bidirectional", activations=["Relu", "Tanh"]), original64="none"),
    Case("RNN/reverse/layout1/no-bias", _recurrent("RNN", direction="reverse", layout=1, bias=False), ort_runs_original=False),
    Case("If/true-through-Not", lambda dtype: models.if_constant(True, dtype, through="Not")),
    Case("If/false-through-Identity", lambda dtype: models.if_constant(False, dtype, through="Identity")),
    Case("If/false-through-Not", lambda dtype: models.if_constant(False, dtype, through="Not")),
    Case("Loop/nested-If-on-iteration", lambda dtype: models.loop(dtype), original64="ort"),
    Case("Loop/plain", lambda dtype: models.loop(dtype, trips=4, nested_if=False), original64="ort"),
    Case("Scan/both-directions-and-axes", lambda dtype: models.scan(dtype), original64="ort"),
]


def _ort(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _original64(case: Case, model: onnx.ModelProto) -> Callable[[np.ndarray], list[np.ndarray]]:
    if case.original64 in ("reference", "none"):
        evaluator = ReferenceEvaluator(model if case.original64 == "reference" else lower_for_gradients(model, "x", "y"))
        return lambda x: evaluator.run(None, {"x": x})
    session = _ort(model)
    return lambda x: session.run(None, {"x": x})


def _x(case: Case, model: onnx.ModelProto) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    shape = [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim]
    return rng.normal(size=shape)


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_lowered_model_computes_the_original(case: Case) -> None:
    model64 = case.build(np.float64)
    x = _x(case, model64)
    lowered64 = lower_for_gradients(model64, "x", "y")
    assert not {node.op_type for node in lowered64.graph.node} & CONSTRUCTS
    expected = _original64(case, model64)(x)
    actual = ReferenceEvaluator(lowered64).run(None, {"x": x})
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    model32 = case.build(np.float32)
    x32 = x.astype(np.float32)
    lowered32 = _ort(lower_for_gradients(model32, "x", "y")).run(None, {"x": x32})
    reference = _ort(model32).run(None, {"x": x32}) if case.ort_runs_original else expected
    for got, want in zip(lowered32, reference):
        assert got.shape == want.shape and got.dtype == np.float32
        assert _relative(got.astype(np.float64), np.asarray(want, np.float64)) < 1e-5


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_gradients_of_the_lowered_model(case: Case) -> None:
    model64 = case.build(np.float64)
    x = _x(case, model64)
    forward = _original64(case, model64)
    y = forward(x)[0]
    rng = np.random.default_rng(zlib.crc32(case.id.encode()) + 1)
    u = rng.normal(size=(LEAD, *y.shape))
    v = rng.normal(size=(LEAD, *x.shape))
    y_vjp, pulled = ReferenceEvaluator(build_vjp_model(model64, "x", "y")).run(None, {"x": x, COTANGENT: u})
    y_jvp, pushed = ReferenceEvaluator(build_jvp_model(model64, "x", "y")).run(None, {"x": x, TANGENT: v})
    np.testing.assert_allclose(y_vjp, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_jvp, y, rtol=1e-12, atol=1e-12)

    left = (u * pushed).reshape(LEAD, -1).sum(axis=1)
    right = (pulled * v).reshape(LEAD, -1).sum(axis=1)
    np.testing.assert_allclose(left, right, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(left).max()))

    h = 1e-6 * max(1.0, float(np.abs(x).max()))
    differences = np.stack([(forward(x + h * v[m])[0] - forward(x - h * v[m])[0]) / (2 * h) for m in range(LEAD)])
    assert _relative(pushed, differences) < 1e-6, f"JVP vs finite differences of the original: {_relative(pushed, differences):.2e}"

    model32 = case.build(np.float32)
    x32 = x.astype(np.float32)
    _, pulled32 = _ort(build_vjp_model(model32, "x", "y")).run(None, {"x": x32, COTANGENT: u.astype(np.float32)})
    _, pushed32 = _ort(build_jvp_model(model32, "x", "y")).run(None, {"x": x32, TANGENT: v.astype(np.float32)})
    assert _relative(pulled32, pulled) < 1e-4, f"ORT float32 VJP: {_relative(pulled32, pulled):.2e}"
    assert _relative(pushed32, pushed) < 1e-4, f"ORT float32 JVP: {_relative(pushed32, pushed):.2e}"


def test_every_lowering_has_a_case() -> None:
    covered = {case.id.split("/")[0] for case in CASES}
    assert covered == set(lowered_ops()) == CONSTRUCTS


def test_a_model_without_constructs_is_returned_as_it_is() -> None:
    model = models.lstm_classifier()
    del model.graph.node[1:]
    assert lower_for_gradients(model, "x", "x_t") is model


def test_a_construct_off_the_differentiable_path_is_left_alone() -> None:
    """An If whose condition is computed at run time but that only feeds a side output stays."""
    model = models.if_constant(True, runtime=True)
    model.graph.node.append(helper.make_node("Tanh", ["x"], ["other"]))
    model.graph.output.append(helper.make_tensor_value_info("other", onnx.TensorProto.DOUBLE, None))
    lowered = lower_for_gradients(model, "x", "other")
    assert "If" in {node.op_type for node in lowered.graph.node}
    with pytest.raises(UnsupportedOpError, match=r"If node 'the_if'.*computed at run time") as info:
        lower_for_gradients(model, "x", "y")
    assert info.value.missing_ops == ["If"]


@pytest.mark.parametrize(
    "op,model",
    [
        ("LSTM", lambda: models.recurrent("LSTM", seq=MAX_UNROLLED_NODES // 10, batch=1, hidden=2, features=2)),
        ("Loop", lambda: models.loop(trips=2**62, nested_if=False)),
    ],
    ids=["LSTM", "Loop"],
)
def test_unrolling_past_the_cap_is_refused_with_the_cap(op: str, model) -> None:
    with pytest.raises(UnsupportedOpError, match=rf"{op} node 'the_{op.lower()}'.*cap of {MAX_UNROLLED_NODES} nodes"):
        build_vjp_model(model(), "x", "y")


def test_full_sequence_lens_is_accepted() -> None:
    model = models.recurrent("GRU", seq=3, batch=2)
    model.graph.initializer.append(numpy_helper.from_array(np.array([3, 3], dtype=np.int32), "lens"))
    model.graph.node[0].input[4] = "lens"  # inputs: x, W, R, B, sequence_lens, initial_h
    lowered = lower_for_gradients(model, "x", "y")
    x = np.random.default_rng(0).normal(size=(3, 2, 3))
    for got, want in zip(ReferenceEvaluator(lowered).run(None, {"x": x}), ReferenceEvaluator(model).run(None, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_cli_audits_an_lstm_classifier_with_graph_gradients(tmp_path) -> None:
    path = tmp_path / "lstm.onnx"
    onnx.save(models.lstm_classifier(), str(path))
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(main, ["audit", str(path), "--gradients", "graph", "--samples", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["method"]["gradients"] == "graph"


def test_a_construct_feeding_only_shape_arithmetic_is_left_alone() -> None:
    """A float If output read only by Shape (zero gradient) is off the path, as the builder decides."""
    model = models.if_constant(True, runtime=True)
    model.graph.node.extend(
        [
            helper.make_node("Shape", ["branch_out"], ["shape"]),
            helper.make_node("Reshape", ["x", "shape_x"], ["x_same"]),
            helper.make_node("Cast", ["shape"], ["shape_f"], to=onnx.TensorProto.DOUBLE),
            helper.make_node("ReduceSum", ["shape_f"], ["count"], keepdims=0),
            helper.make_node("Mul", ["x_same", "count"], ["scaled"]),
        ]
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape_x"))
    lowered = lower_for_gradients(model, "x", "scaled")
    assert "If" in {node.op_type for node in lowered.graph.node}
