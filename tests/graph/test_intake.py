"""Model intake and selection on every sample model and on models built in code."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.errors import InputError, ModelError
from fimaudit.graph.describe import describe_model
from fimaudit.graph.loader import load_model
from fimaudit.graph.selection import select_input_output
from tests.conftest import SAMPLES, linear_classifier, sample_manifest

MANIFEST = sample_manifest()


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["file"] for m in MANIFEST])
def test_every_sample_model_is_described(entry: dict) -> None:
    path = SAMPLES / entry["file"]
    loaded = load_model(path)
    description = describe_model(loaded)
    assert description.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert description.opsets["ai.onnx"] == entry["opset"]
    assert description.ir_version == entry["ir_version"]
    assert [t.name for t in description.inputs] == [entry["input"]["name"]]
    # torch's parameter count; exporters fold BatchNorm (fewer) or keep its running statistics (more).
    assert 0.9 * entry["params"] <= description.parameter_count <= 1.5 * entry["params"]
    assert sum(description.op_histogram.values()) == description.node_count
    assert bool(description.external_data_files) == entry["has_external_data"]


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["file"] for m in MANIFEST])
def test_output_kind_is_detected(entry: dict) -> None:
    selection = select_input_output(load_model(SAMPLES / entry["file"]))
    assert selection.output_kind == entry["output"]["kind"]
    assert selection.output_name == entry["output"]["name"]
    assert selection.input_name == "input"


def test_constant_node_weights_give_the_same_logits_as_initializers(digits: np.ndarray) -> None:
    logits = {}
    for name in ("mlp.onnx", "mlp_constants.onnx", "mlp_softmax.onnx"):
        taken = intake(str(SAMPLES / name))
        prepared = prepare_model(taken, AuditConfig(model_path=str(SAMPLES / name)), digits[:1])
        (logits[name],) = prepared.runner.run(digits[:5])
    np.testing.assert_allclose(logits["mlp_constants.onnx"], logits["mlp.onnx"], atol=1e-6)
    # The softmax model is cut before its Softmax: its logits equal the plain model's.
    np.testing.assert_allclose(logits["mlp_softmax.onnx"], logits["mlp.onnx"], atol=1e-5)


def test_sigmoid_output_becomes_two_class_logits(digits: np.ndarray) -> None:
    path = SAMPLES / "binary_sigmoid.onnx"
    taken = intake(str(path))
    prepared = prepare_model(taken, AuditConfig(model_path=str(path)), digits[:1])
    (pair,) = prepared.runner.run(digits[:6])
    assert prepared.num_classes == 2
    import onnxruntime as ort

    (probability,) = ort.InferenceSession(str(path)).run(None, {"input": digits[:6]})
    np.testing.assert_array_equal(pair[:, 0], 0.0)
    # ORT's float32 Sigmoid is approximate in the far tail: an absolute tolerance there.
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-pair[:, 1])), probability[:, 0], rtol=1e-5, atol=1e-7)


def test_fixed_batch_one_is_recorded_and_relaxed(digits: np.ndarray) -> None:
    path = SAMPLES / "resnet_small.onnx"
    taken = intake(str(path))
    assert taken.selection.fixed_batch == 1
    prepared = prepare_model(taken, AuditConfig(model_path=str(path)), digits[:1])
    (batched,) = prepared.runner.run_batched(digits[:4])
    singles = np.concatenate([prepared.runner.run(digits[i : i + 1])[0] for i in range(4)])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-6)


def test_external_data_loads_from_another_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_model(SAMPLES / "resnet_small.onnx")
    assert loaded.external_data_files == ["resnet_small.onnx.data"]


def test_probabilities_without_softmax_are_read_through_log(save_model) -> None:
    """A model that normalises by a division (not Softmax) is recognised at run time."""
    weight = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    model = linear_classifier(weight)
    graph = model.graph
    graph.node[0].output[0] = "z"
    graph.node.extend(
        [
            helper.make_node("Exp", ["z"], ["e"]),
            helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
            helper.make_node("Div", ["e", "s"], ["logits"]),
        ]
    )
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    path = save_model(model)
    taken = intake(str(path))
    assert taken.selection.output_kind == "logits"  # structure alone cannot tell
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    prepared = prepare_model(taken, AuditConfig(model_path=str(path)), x)
    assert prepared.selection.output_kind == "probabilities"
    (log_p,) = prepared.runner.run(x)
    z = x @ weight.T
    expected = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(log_p, expected, atol=1e-5)


def test_extra_input_can_be_chosen_and_unknown_names_are_refused(save_model) -> None:
    model = linear_classifier(np.eye(3, 4))
    model.graph.input.append(helper.make_tensor_value_info("temperature", TensorProto.FLOAT, [1]))
    path = save_model(model)
    assert select_input_output(load_model(path)).input_name == "x"
    with pytest.raises(InputError, match="not a model input"):
        select_input_output(load_model(path), input_name="nope")
    with pytest.raises(InputError, match="not a model output"):
        select_input_output(load_model(path), output_name="nope")


def test_integer_only_input_is_not_differentiable(save_model) -> None:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["emb"]), helper.make_node("ReduceMean", ["emb"], ["logits"], axes=[1], keepdims=0)],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [onnx.numpy_helper.from_array(np.ones((10, 4), np.float32), "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(ModelError, match="no float input"):
        select_input_output(load_model(save_model(model)))


def test_too_new_ir_version_is_lowered(save_model, digits: np.ndarray) -> None:
    model = onnx.load(SAMPLES / "mlp.onnx")
    model.ir_version = 99
    path = save_model(model)
    taken = intake(str(path))
    prepared = prepare_model(taken, AuditConfig(model_path=str(path)), digits[:1])
    assert prepared.runner.model.ir_version < 99
    assert prepared.runner.run(digits[:2])[0].shape == (2, 10)


@pytest.mark.parametrize("content", [b"", b"not a model at all", bytes(range(256)) * 3])
def test_unreadable_model_files_raise_model_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        load_model(path)


def test_truncated_model_raises_model_error(tmp_path) -> None:
    data = (SAMPLES / "vgg_small.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        load_model(path)
