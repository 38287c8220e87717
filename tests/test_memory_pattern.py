"""ONNX Runtime's memory pattern, given up for models with large activations (runtime.create_session).

What is checked: the size the choice rests on (graph/flops.largest_activation_bytes) against
hand-computed bytes; that a model's runner and every gradient session built from it follow the
choice; that outputs and gradients do not depend on it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from fimaudit import runtime
from fimaudit.gradients import graph as graph_gradients
from fimaudit.gradients import make_source
from fimaudit.graph.flops import largest_activation_bytes
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import MEMORY_PATTERN_MAX_ACTIVATION_BYTES, ModelRunner, create_session

WIDE = 1024  # [1, 2, 1024, 1024] float32: 8 MiB, the threshold


def _pooled_classifier(side: int, batch: int | str = "N") -> onnx.ModelProto:
    """x [batch, 2, side, side] -> Relu -> GlobalAveragePool -> Flatten -> Gemm 2->3 (transB): the logits."""
    weight = numpy_helper.from_array(np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]], dtype=np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], [LOGITS], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "pooled", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 2, side, side])],
        [helper.make_tensor_value_info(LOGITS, onnx.TensorProto.FLOAT, [batch, 3])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_largest_activation_counts_bytes_at_batch_one_without_weights() -> None:
    model = _pooled_classifier(8)
    assert largest_activation_bytes(model) == 4 * 2 * 8 * 8  # x and r; the symbolic batch counts as 1
    wide_weight = numpy_helper.from_array(np.zeros((1000, 1000), dtype=np.float32), "big")
    model.graph.initializer.append(wide_weight)
    model.graph.value_info.append(helper.make_tensor_value_info("big", onnx.TensorProto.FLOAT, [1000, 1000]))
    assert largest_activation_bytes(model) == 4 * 2 * 8 * 8  # a weight is not an activation
    model.graph.value_info.append(helper.make_tensor_value_info("d", onnx.TensorProto.DOUBLE, [1, 2, 8, 8]))
    assert largest_activation_bytes(model) == 8 * 2 * 8 * 8  # the element type's size


@pytest.mark.parametrize(("side", "expected"), [(WIDE // 2, True), (WIDE, False)])
def test_a_runner_keeps_the_pattern_only_below_the_threshold(side: int, expected: bool) -> None:
    assert largest_activation_bytes(_pooled_classifier(side)) == 4 * 2 * side * side
    assert (4 * 2 * side * side < MEMORY_PATTERN_MAX_ACTIVATION_BYTES) is expected
    runner = ModelRunner(model=_pooled_classifier(side), input_name="x", output_names=[LOGITS])
    assert runner.uses_memory_pattern is expected
    assert runner.session.get_session_options().enable_mem_pattern is expected
    told = ModelRunner(model=_pooled_classifier(side), input_name="x", output_names=[LOGITS], memory_pattern=True)
    assert told.session.get_session_options().enable_mem_pattern is True


def test_gradient_sessions_follow_their_runner(monkeypatch) -> None:
    asked: list[bool] = []

    def recording(*args, **kwargs):
        session, model = create_session(*args, **kwargs)
        asked.append(session.get_session_options().enable_mem_pattern)
        return session, model

    monkeypatch.setattr(graph_gradients, "create_session", recording)
    runner = ModelRunner(model=_pooled_classifier(WIDE), input_name="x", output_names=[LOGITS])
    source = make_source("graph", runner, (2, WIDE, WIDE), 3).source
    sample = np.random.default_rng(0).normal(size=(2, WIDE, WIDE)).astype(np.float32)
    source.vjp(sample, np.eye(3))
    source.jvp(sample, np.ones((1, 2 * WIDE * WIDE), dtype=np.float32))
    assert asked and not any(asked)


def test_outputs_and_gradients_do_not_depend_on_the_pattern() -> None:
    data = np.random.default_rng(1).normal(size=(2, 2, WIDE, WIDE)).astype(np.float32)
    results = []
    for pattern in (True, False):
        runner = ModelRunner(model=_pooled_classifier(WIDE), input_name="x", output_names=[LOGITS], memory_pattern=pattern)
        source = make_source("graph", runner, (2, WIDE, WIDE), 3).source
        results.append((runner.run(data)[0], source.vjp(data[0], np.eye(3))))
    (logits_on, pulled_on), (logits_off, pulled_off) = results
    np.testing.assert_array_equal(logits_off, logits_on)
    np.testing.assert_array_equal(pulled_off, pulled_on)
    expected = np.where(data[0] > 0, 1.0, 0.0) / (WIDE * WIDE)  # d mean(relu(x_c)) / dx, times the weights
    weights = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]])
    np.testing.assert_allclose(pulled_on.reshape(3, 2, WIDE, WIDE),
                               weights[:, :, None, None] * expected[None], rtol=1e-5, atol=1e-12)


def test_the_session_factory_passes_the_choice_on() -> None:
    session, _ = runtime.create_session(_pooled_classifier(8), memory_pattern=False)
    assert session.get_session_options().enable_mem_pattern is False
    session, _ = runtime.create_session(_pooled_classifier(8))
    assert session.get_session_options().enable_mem_pattern is True
