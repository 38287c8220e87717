"""Whole-model gradient graphs: sample models against finite differences, batch-1 exports,
chunking and accounting, preflight, and the ``fimaudit jacobian`` command.

Two references, because the library's finite differences are themselves inexact:
- FiniteDifferenceJacobian (ONNX Runtime, float32, relative step 1e-3): measured up to 2.0e-2
  relative Frobenius error on resnet_small (ReLU kinks inside the step), so graph and FD must
  agree to FD_TOLERANCE = 5e-2, Jacobians and exact lambda_max alike;
- central differences in float64 (step 1e-6) of a float64 copy of the model run by onnx's
  ReferenceEvaluator: the graph Jacobian, computed in float32, must agree to EXACT_TOLERANCE =
  1e-4 (measured 1.3e-7 on resnet_small). A wrong rule is off by O(1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.autodiff.build import build_vjp_model, missing_rules
from fimaudit.cli import main
from fimaudit.errors import UnsupportedOpError
from fimaudit.gradients import FiniteDifferenceJacobian, GraphJacobian, SourceChoice, make_source
from fimaudit.gradients.graph import graph_source
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner
from tests.autodiff.reference_ops import EXACT_OPS
from tests.conftest import SAMPLES, sample_manifest

TOLERANCE = FD_TOLERANCE = 5e-2
EXACT_TOLERANCE = 1e-4


def _float64_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float64 (initializers, constants, declared types, casts)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64)))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
    return copy


def _float64_differences(model: onnx.ModelProto, input_name: str, sample: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Central differences (h = 1e-6) of the float64 model: the Jacobian [K, d] of one sample."""
    evaluator = ReferenceEvaluator(_float64_copy(model), new_ops=EXACT_OPS)
    flat = sample.reshape(-1).astype(np.float64)
    h = 1e-6
    rows = np.concatenate([flat + h * np.eye(flat.size), flat - h * np.eye(flat.size)]).reshape(-1, *sample.shape)
    if fixed_batch:
        values = np.concatenate([evaluator.run(None, {input_name: rows[i : i + 1]})[0] for i in range(rows.shape[0])])
    else:
        (values,) = evaluator.run(None, {input_name: rows})
    values = values.reshape(rows.shape[0], -1)
    return ((values[: flat.size] - values[flat.size :]) / (2 * h)).T


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _prepare(path: Path | str, probe: np.ndarray):
    config = AuditConfig(model_path=str(path))
    return prepare_model(intake(str(path)), config, probe=probe)


def _source(prepared, kind: str) -> SourceChoice:
    return make_source(kind, prepared.runner, prepared.selection.sample_shape, prepared.num_classes)


@pytest.mark.parametrize("entry", sample_manifest(), ids=lambda entry: entry["file"])
def test_sample_model_graph_jacobian_matches_finite_differences(entry: dict, digits: np.ndarray) -> None:
    inputs = digits[:2]
    prepared = _prepare(SAMPLES / entry["file"], inputs[:1])
    choice = _source(prepared, "graph")
    graph, fd = choice.source, _source(prepared, "fd").source
    assert choice.kind == "graph"
    ours, theirs = graph.dense(inputs), fd.dense(inputs)
    assert ours.shape == theirs.shape == (2, entry["num_classes"], 64)
    assert _relative(ours, theirs) < FD_TOLERANCE
    logits = graph.logits(inputs)
    np.testing.assert_allclose(logits, fd.logits(inputs), rtol=1e-5, atol=1e-5)
    runner = prepared.runner
    for index in range(inputs.shape[0]):
        exact_graph = exact_lambda_max(ours[index], logits[index]).value
        exact_fd = exact_lambda_max(theirs[index], logits[index]).value
        assert abs(exact_graph - exact_fd) <= FD_TOLERANCE * exact_fd
    precise = _float64_differences(runner.model, runner.input_name, inputs[0], runner.fixed_batch)
    assert _relative(ours[0], precise) < EXACT_TOLERANCE
    exact_precise = exact_lambda_max(precise, logits[0]).value
    assert abs(exact_lambda_max(ours[0], logits[0]).value - exact_precise) <= EXACT_TOLERANCE * exact_precise


def _fixed_batch_runner(path: Path, probe: np.ndarray) -> tuple[ModelRunner, int]:
    """The logits runner of a fixed-batch export, batch NOT relaxed (as if relaxing had failed)."""
    prepared = _prepare(path, probe)
    selection = prepared.selection
    runner = ModelRunner(prepared.logits_model, selection.input_name, [LOGITS], fixed_batch=selection.fixed_batch)
    return runner, prepared.num_classes


def test_batch_one_dynamo_model_vjp_and_jvp(digits: np.ndarray) -> None:
    runner, classes = _fixed_batch_runner(SAMPLES / "resnet_small.onnx", digits[:1])
    assert runner.fixed_batch == 1
    source = GraphJacobian(runner, (1, 8, 8), classes, build_vjp_model(runner.model, runner.input_name, LOGITS))
    sample = digits[3]
    reference = _float64_differences(runner.model, runner.input_name, sample, runner.fixed_batch)
    fd = FiniteDifferenceJacobian(runner, (1, 8, 8), classes).dense(sample[None])[0]
    assert _relative(fd, reference) < FD_TOLERANCE  # the library's FD, for scale
    rng = np.random.default_rng(0)
    cotangents = rng.normal(size=(4, classes))
    assert _relative(source.vjp(sample, cotangents), cotangents @ reference) < EXACT_TOLERANCE
    tangents = rng.normal(size=(3, 64))
    assert _relative(source.jvp(sample, tangents), tangents @ reference.T) < EXACT_TOLERANCE
    # Several samples through a batch-1 graph: one run per sample and chunk.
    both = source.dense(digits[3:5])
    assert _relative(both[0], reference) < EXACT_TOLERANCE


def _wide_classifier(classes: int = 23, features: int = 12) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    weight = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["logits"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_dense_chunks_cotangents_within_max_rows_and_counts_cost(save_model) -> None:
    path = save_model(_wide_classifier())
    inputs = np.random.default_rng(1).normal(size=(3, 12)).astype(np.float32)
    prepared = _prepare(path, inputs[:1])
    assert isinstance(graph_source(prepared.runner, (12,), prepared.num_classes), GraphJacobian)
    limited = GraphJacobian(prepared.runner, (12,), 23, build_vjp_model(prepared.runner.model, "x", LOGITS), max_rows=7)
    runs: list[tuple[int, int, bytes]] = []
    original = limited._vjp.run

    def recording(rows: np.ndarray, seeds: np.ndarray):
        runs.append((seeds.shape[0], rows.shape[0], rows.tobytes()))
        return original(rows, seeds)

    limited._vjp.run = recording  # type: ignore[method-assign]
    before = limited.accounting.evaluations
    dense = limited.dense(inputs)
    assert all(m * b <= 7 for m, b, _ in runs)
    # M*B gradient rows per run, and each group's B forward rows once (the forward half is kept
    # across its chunks of cotangents).
    forward_rows = sum({key: b for _, b, key in runs}.values())
    assert limited.accounting.evaluations - before == sum(b * m for m, b, _ in runs) + forward_rows
    fd = FiniteDifferenceJacobian(prepared.runner, (12,), 23).dense(inputs)
    assert _relative(dense, fd) < TOLERANCE


def _model_with(nodes: list, initializers: list | None = None, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializers or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_preflight_names_missing_and_non_differentiable_ops_only_on_the_path() -> None:
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "z")
    model = _model_with(
        [
            helper.make_node("Shape", ["x"], ["shape"]),  # shape arithmetic from x: off the path
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Hardmax", ["r"], ["h"], name="the_hardmax"),
            helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"], name="quant"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
            helper.make_node("Add", ["h", "d"], ["y"]),
        ],
        [scale, zero],
    )
    missing = missing_rules(model, "x", "y")
    assert ("Hardmax", "the_hardmax") in missing
    assert ("QuantizeLinear", "quant") in missing
    assert ("DequantizeLinear", "") in missing  # dequantizes an activation: on the path
    assert not any(op in ("Shape", "Reshape") for op, _ in missing)
    with pytest.raises(UnsupportedOpError, match="Hardmax") as raised:
        build_vjp_model(model, "x", "y")
    assert "the_hardmax" in str(raised.value) and "Conv" in str(raised.value)
    assert "Hardmax" in raised.value.missing_ops


def test_weight_only_subgraphs_need_no_rules() -> None:
    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "W")
    model = _model_with(
        [
            helper.make_node("Hardmax", ["W"], ["hw"]),  # computed from weights alone
            helper.make_node("MatMul", ["x", "hw"], ["y"]),
        ],
        [weight],
    )
    assert missing_rules(model, "x", "y") == []


def test_jacobian_command_writes_the_graph_jacobian(tmp_path: Path, digits: np.ndarray) -> None:
    out = tmp_path / "J.npy"
    data = tmp_path / "x.npy"
    np.save(data, digits[:3])
    result = CliRunner().invoke(
        main, ["jacobian", str(SAMPLES / "mlp.onnx"), "--data", str(data), "--out", str(out), "--gradients", "graph"]
    )
    assert result.exit_code == 0, result.output
    written = np.load(out)
    assert written.shape == (3, 10, 1, 8, 8) and written.dtype == np.float32
    prepared = _prepare(SAMPLES / "mlp.onnx", digits[:1])
    fd = _source(prepared, "fd").source
    assert _relative(written.reshape(3, 10, 64).astype(np.float64), fd.dense(digits[:3])) < TOLERANCE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_gradients_graph_on_an_unsupported_model_exits_2(tmp_path: Path, save_model, digits: np.ndarray) -> None:
    model = _model_with([helper.make_node("Hardmax", ["x"], ["y"], name="hm")])
    path = save_model(model)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32))
    result = CliRunner().invoke(main, ["jacobian", str(path), "--data", str(data), "--out", str(tmp_path / "J.npy"), "--gradients", "graph"])
    assert result.exit_code == 2
    assert "Hardmax" in result.output
    fallback = CliRunner().invoke(main, ["jacobian", str(path), "--data", str(data), "--out", str(tmp_path / "J.npy"), "--gradients", "auto"])
    assert fallback.exit_code == 0, fallback.output
    assert "fallback" in fallback.output


def test_fixed_batch_two_and_extra_inputs() -> None:
    """A fixed batch of 2 (odd sample counts are padded) and a second model input fed per row."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(4, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "m"], ["h"]), helper.make_node("MatMul", ["h", "W"], [LOGITS])],
        "masked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]), helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    mask = np.array([1.0, 0.0, 2.0, -1.0], dtype=np.float32)
    runner = ModelRunner(model, "x", [LOGITS], fixed_batch=2, extra_feeds={"m": mask})
    source = GraphJacobian(runner, (4,), 5, build_vjp_model(model, "x", LOGITS))
    inputs = rng.normal(size=(3, 4)).astype(np.float32)
    expected = (weight * mask[:, None]).T  # d z / d x = W^T diag(m), the same for every sample
    dense = source.dense(inputs)
    assert dense.shape == (3, 5, 4)
    np.testing.assert_allclose(dense, np.broadcast_to(expected, (3, 5, 4)), rtol=1e-6, atol=1e-6)
    cotangents = rng.normal(size=(2, 5))
    np.testing.assert_allclose(source.vjp(inputs[0], cotangents), cotangents @ expected, rtol=1e-5, atol=1e-5)
    tangents = rng.normal(size=(3, 4))
    np.testing.assert_allclose(source.jvp(inputs[0], tangents), tangents @ expected.T, rtol=1e-5, atol=1e-5)


def _rank_hidden_model() -> onnx.ModelProto:
    """x [N, 4] -> Reshape to [N, 2, 2] with a target chosen by an If (rank unknown statically) -> MatMul."""
    cond = numpy_helper.from_array(np.array(True), "cond")
    weight = numpy_helper.from_array(np.random.default_rng(3).normal(size=(2, 3)).astype(np.float32), "W")

    def branch(name: str, target: list[int]) -> onnx.GraphProto:
        value = helper.make_tensor(f"{name}_value", TensorProto.INT64, [len(target)], target)
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_out"], value=value)],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.INT64, [len(target)])],
        )

    graph = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["target"], then_branch=branch("then", [-1, 2, 2]), else_branch=branch("else", [-1, 4])),
            helper.make_node("Reshape", ["x", "target"], ["r"]),
            helper.make_node("MatMul", ["r", "W"], ["m"]),
            helper.make_node("Flatten", ["m"], [LOGITS]),
        ],
        "hidden",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["N", 6])],
        [cond, weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_probe_runs_supply_ranks_static_inference_misses() -> None:
    from fimaudit.autodiff.probe_shapes import ShapeProbe

    model = _rank_hidden_model()
    with pytest.raises(UnsupportedOpError, match="rank"):
        build_vjp_model(model, "x", LOGITS)
    runner = ModelRunner(model, "x", [LOGITS])
    source = GraphJacobian(runner, (4,), 6, build_vjp_model(model, "x", LOGITS, ShapeProbe((4,))))
    inputs = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    expected = FiniteDifferenceJacobian(runner, (4,), 6).dense(inputs)  # a linear model: FD is exact to float32
    assert _relative(source.dense(inputs), expected) < 1e-3
    tangents = np.random.default_rng(5).normal(size=(2, 4))
    assert _relative(source.jvp(inputs[0], tangents), tangents @ expected[0].T) < 1e-3
