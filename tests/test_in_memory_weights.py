"""Large weights handed to ONNX Runtime in memory (session_weights.py): the same numbers, no file read.

What is checked: a session whose large initializers (the model's own and those sent beside it)
go in memory computes bit for bit what the serialised model computes, also once those buffers
are gone (ONNX Runtime copies them while loading); what stays serialised (small tensors, values
not stored as raw bytes) is not touched; a lowered IR version works either way; a weight whose
bytes do not fill its shape is one ModelError; whole gradient sources give identical Jacobians,
Lanczos products included, with every initializer in memory.
"""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit import session_weights
from fimaudit.errors import ModelError
from fimaudit.gradients import make_source
from fimaudit.graph.onnx_utils import tensor_bytes
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner, create_session
from fimaudit.session_weights import IN_MEMORY_MIN_BYTES, session_payload

RNG = np.random.default_rng(11)
SIDE = 512  # [512, 512] float32: 1 MiB, the threshold


def _two_layers(ir_version: int = 8) -> tuple[onnx.ModelProto, list[TensorProto]]:
    """x [2, SIDE] -> MatMul W1 (in the model) -> Relu -> MatMul W2 (sent beside it) -> + b: the logits."""
    w1 = numpy_helper.from_array((RNG.standard_normal((SIDE, SIDE)) / SIDE**0.5).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((RNG.standard_normal((SIDE, SIDE)) / SIDE**0.5).astype(np.float32), "w2")
    b = numpy_helper.from_array(RNG.standard_normal(SIDE).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        "two_layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, SIDE])], [w1],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    return model, [w2, b]


def _whole(model: onnx.ModelProto, weights: list[TensorProto]) -> onnx.ModelProto:
    whole = onnx.ModelProto()
    whole.CopyFrom(model)
    whole.graph.initializer.extend(weights)
    return whole


def _serialised_only(monkeypatch) -> None:
    monkeypatch.setattr(session_weights, "IN_MEMORY_MIN_BYTES", 1 << 62)


def test_large_weights_go_in_memory_and_compute_the_same_numbers(monkeypatch) -> None:
    model, weights = _two_layers()
    assert tensor_bytes(model.graph.initializer[0]) == IN_MEMORY_MIN_BYTES == tensor_bytes(weights[0])
    payload = session_payload(model, weights)
    assert sorted(payload.in_memory) == ["w1", "w2"], "both large weights (the model's and the one beside it)"
    parsed = onnx.ModelProto()
    parsed.ParseFromString(payload.serialised)
    held = {t.name: t for t in parsed.graph.initializer}
    assert sorted(held) == ["b", "w1", "w2"]
    assert held["w1"].data_location == TensorProto.EXTERNAL and not held["w1"].raw_data
    np.testing.assert_array_equal(numpy_helper.to_array(held["b"]), numpy_helper.to_array(weights[1]))
    assert len(payload.serialised) < 64 * 1024, "no weight's bytes were serialised"
    assert len(model.graph.initializer) == 1 and model.graph.initializer[0].raw_data, "the model is not changed"

    x = RNG.standard_normal((2, SIDE)).astype(np.float32)
    in_memory, loaded = create_session(model, ["CPUExecutionProvider"], 1, weights)
    assert loaded is model
    _serialised_only(monkeypatch)
    assert not session_payload(_whole(model, weights)).in_memory
    serialised, _ = create_session(_whole(model, weights), ["CPUExecutionProvider"], 1)
    np.testing.assert_array_equal(in_memory.run(None, {"x": x})[0], serialised.run(None, {"x": x})[0])


def test_the_session_does_not_read_the_in_memory_buffers_after_it_is_created() -> None:
    model, weights = _two_layers()
    x = RNG.standard_normal((2, SIDE)).astype(np.float32)
    session, _ = create_session(model, ["CPUExecutionProvider"], 1, weights)
    expected = session.run(None, {"x": x})[0]
    del model, weights  # the payload's buffers went when create_session returned
    gc.collect()
    for _ in range(3):  # freed buffers would be reused by these allocations and change the result
        np.full((SIDE, SIDE), np.nan, dtype=np.float32)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], expected)


def test_small_and_non_raw_tensors_stay_serialised() -> None:
    model, weights = _two_layers()
    as_floats = TensorProto()
    as_floats.CopyFrom(weights[0])
    as_floats.ClearField("raw_data")
    as_floats.float_data.extend(numpy_helper.to_array(weights[0]).ravel().tolist())
    payload = session_payload(model, [as_floats, weights[1]])
    assert list(payload.in_memory) == ["w1"]
    parsed = onnx.ModelProto()
    parsed.ParseFromString(payload.serialised)
    kept = {t.name: t for t in parsed.graph.initializer}
    np.testing.assert_array_equal(numpy_helper.to_array(kept["w2"]), numpy_helper.to_array(weights[0]))


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_lowered_ir_version_loads_either_way(monkeypatch, in_memory: bool) -> None:
    model, weights = _two_layers(ir_version=99)
    if not in_memory:
        _serialised_only(monkeypatch)
    x = RNG.standard_normal((2, SIDE)).astype(np.float32)
    assert bool(session_payload(model, weights).in_memory) is in_memory
    session, loaded = create_session(model, ["CPUExecutionProvider"], 1, weights)
    assert loaded.ir_version < 99 and model.ir_version == 99
    _serialised_only(monkeypatch)
    reference, _ = create_session(_whole(model, weights), ["CPUExecutionProvider"], 1)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0])


def test_bytes_that_do_not_fill_the_shape_are_one_model_error() -> None:
    model, weights = _two_layers()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    with pytest.raises(ModelError, match="w1"):
        create_session(model, ["CPUExecutionProvider"], 1, weights)


def _conv_classifier() -> onnx.ModelProto:
    """x [N, 4, 8, 8] -> Conv 4->8 3x3 -> Relu -> MaxPool 2 -> Flatten -> Gemm 128->5: the logits."""
    rng = np.random.default_rng(2)  # the same weights on every call
    conv = numpy_helper.from_array((rng.standard_normal((8, 4, 3, 3)) / 6).astype(np.float32), "conv")
    dense = numpy_helper.from_array((rng.standard_normal((5, 128)) / 11).astype(np.float32), "dense")
    nodes = [
        helper.make_node("Conv", ["x", "conv"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "dense"], [LOGITS], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["N", 5])], [conv, dense],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _jacobians(monkeypatch, threshold: int) -> list[np.ndarray]:
    monkeypatch.setattr(session_weights, "IN_MEMORY_MIN_BYTES", threshold)
    runner = ModelRunner(model=_conv_classifier(), input_name="x", output_names=[LOGITS])
    source = make_source("graph", runner, (4, 8, 8), 5).source
    sample = np.random.default_rng(3).normal(size=(4, 8, 8)).astype(np.float32)
    cotangents = np.random.default_rng(4).normal(size=(2, 5))
    tangents = np.random.default_rng(5).normal(size=(2, 4 * 8 * 8))
    outputs = [runner.run(sample[None])[0], source.dense(sample[None])]
    source.expect_products(sample)  # the kept-forward halves and their shared forward session
    outputs += [source.vjp(sample, cotangents), source.jvp(sample, tangents)]
    return outputs


def test_gradient_sources_give_identical_jacobians_with_every_initializer_in_memory(monkeypatch) -> None:
    built: list[int] = []
    original = session_weights.session_payload

    def counting(*args, **kwargs):
        payload = original(*args, **kwargs)
        built.append(len(payload.in_memory))
        return payload

    monkeypatch.setattr("fimaudit.runtime.session_payload", counting)
    in_memory = _jacobians(monkeypatch, 1024)  # both weights (1152 and 2560 bytes), no shape constant
    assert built[0] == 2 and sum(built) >= 2 * 4, "the runner's and the gradient sessions' weights went in memory"
    serialised = _jacobians(monkeypatch, 1 << 62)
    for got, expected in zip(in_memory, serialised, strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("dtype", "elem"), [(np.float16, TensorProto.FLOAT16), (np.float64, TensorProto.DOUBLE)])
def test_half_and_double_weights_go_in_memory_with_the_same_numbers(monkeypatch, dtype, elem) -> None:
    side = 1024  # 2 MiB in float16
    weight = numpy_helper.from_array((RNG.standard_normal((side, side)) / 32).astype(dtype), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", elem, [1, side])],
        [helper.make_tensor_value_info("y", elem, [1, side])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert list(session_payload(model).in_memory) == ["w"]
    x = RNG.standard_normal((1, side)).astype(dtype)
    in_memory, _ = create_session(model, ["CPUExecutionProvider"], 1)
    _serialised_only(monkeypatch)
    serialised, _ = create_session(model, ["CPUExecutionProvider"], 1)
    np.testing.assert_array_equal(in_memory.run(None, {"x": x})[0], serialised.run(None, {"x": x})[0])
