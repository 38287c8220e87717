"""Rows per run of a kept gradient half, capped by the model's largest activation (GraphJacobian.speed_rows).

What is checked: the cap is RUN_ACTIVATION_BYTES over the largest activation (at least 1, at
most the planned batch); products with more rows run in chunks of it and give the numbers one
run gives; a J v call with more rows than the cap runs on the kept halves (no forward pass
per chunk) whatever came before, and dense Jacobians take the cap's classes per run.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.gradients import graph as graph_gradients
from fimaudit.gradients import make_source
from fimaudit.graph.flops import largest_activation_bytes
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner

CLASSES, SIDE = 5, 8


def _model() -> onnx.ModelProto:
    """x [N, 2, 8, 8] -> Conv 2->4 3x3 -> Relu -> Flatten -> Gemm 256->5: the logits (largest activation 1 KiB)."""
    rng = np.random.default_rng(7)
    conv = numpy_helper.from_array((rng.standard_normal((4, 2, 3, 3)) / 4).astype(np.float32), "conv")
    dense = numpy_helper.from_array((rng.standard_normal((CLASSES, 4 * SIDE * SIDE)) / 16).astype(np.float32), "dense")
    nodes = [
        helper.make_node("Conv", ["x", "conv"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "dense"], [LOGITS], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, SIDE, SIDE])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["N", CLASSES])], [conv, dense],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _source(monkeypatch, rows: int):
    """A graph source whose speed_rows is ``rows`` (RUN_ACTIVATION_BYTES set to that many activations)."""
    model = _model()
    monkeypatch.setattr(graph_gradients, "RUN_ACTIVATION_BYTES", rows * largest_activation_bytes(model))
    runner = ModelRunner(model=model, input_name="x", output_names=[LOGITS])
    return make_source("graph", runner, (2, SIDE, SIDE), CLASSES).source


SAMPLE = np.random.default_rng(8).normal(size=(2, SIDE, SIDE)).astype(np.float32)


def test_the_cap_is_the_byte_budget_over_the_largest_activation(monkeypatch) -> None:
    assert largest_activation_bytes(_model()) == 4 * 4 * SIDE * SIDE
    assert _source(monkeypatch, 3).speed_rows == 3
    assert _source(monkeypatch, 0).speed_rows == 1, "at least one row"
    huge = _source(monkeypatch, 10**6)
    assert huge.speed_rows == huge.max_rows, "never above the planned batch"


def test_products_with_more_rows_run_in_chunks_of_the_cap_with_the_same_numbers(monkeypatch) -> None:
    cotangents = np.random.default_rng(9).normal(size=(7, CLASSES))
    tangents = np.random.default_rng(10).normal(size=(7, 2 * SIDE * SIDE))
    results = {}
    for rows in (3, 10**6):
        source = _source(monkeypatch, rows)
        source.expect_products(SAMPLE)  # the kept halves of both modes
        accounting = source.runner.accounting
        before = accounting.runs
        reverse = source.vjp(SAMPLE, cotangents)
        forward = source.jvp(SAMPLE, tangents)
        results[rows] = (reverse, forward, accounting.runs - before)
    chunked, whole = results[3], results[10**6]
    assert chunked[2] == 2 * 3, "3 + 3 + 1 rows in each mode (the forward half's run counts with the first)"
    assert whole[2] == 2 * 1
    for got, expected in zip(chunked[:2], whole[:2], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_a_jvp_call_with_more_rows_than_the_cap_runs_on_the_kept_halves(monkeypatch) -> None:
    tangents = np.random.default_rng(11).normal(size=(4, 2 * SIDE * SIDE))
    capped = _source(monkeypatch, 3)
    assert capped._jvp_kept is None
    few = capped.jvp(SAMPLE, tangents[:3])
    assert capped._jvp_kept is None, "three rows fit one run: the combined model, as before"
    many = capped.jvp(SAMPLE, tangents)
    assert capped._jvp_kept is not None
    plain = _source(monkeypatch, 10**6)
    np.testing.assert_allclose(many, plain.jvp(SAMPLE, tangents), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(few, many[:3], rtol=1e-6, atol=1e-7)
    assert plain._jvp_kept is None


@pytest.mark.parametrize("rows", [2, 10**6])
def test_dense_jacobians_take_the_caps_classes_per_run(monkeypatch, rows: int) -> None:
    source = _source(monkeypatch, rows)
    accounting = source.runner.accounting
    before = accounting.runs
    jacobian = source.dense(SAMPLE[None])
    runs = accounting.runs - before
    assert runs == (-(-CLASSES // 2) if rows == 2 else 1), "the classes in runs of the cap's rows"
    reference = _source(monkeypatch, 10**6).dense(SAMPLE[None])
    np.testing.assert_allclose(jacobian, reference, rtol=1e-6, atol=1e-7)
