"""Gradient rows in parts side by side (ort_threads.prefer_row_parallel, audit.plan_threads).

What is checked: the linear-op count the choice rests on (graph/flops.py) against hand-counted
FLOPs; which audits ask for the mode; that a gradient source split into parts returns what the
whole runs return (the mode itself, taken before a process's first session: test_ort_threads.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from fimaudit import audit, ort_threads
from fimaudit.audit import AuditConfig, intake, plan_threads, prepare_model
from fimaudit.gradients import make_source
from fimaudit.graph.flops import linear_work

SAMPLE = "sample_models/resnet_small.onnx"


def _linear_model() -> onnx.ModelProto:
    """Conv 3->4 (3x3, pad 1) on 1x3x8x8, Flatten, Gemm 256->10 (transB), MatMul 10->5."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(10, 256)).astype(np.float32), "g"),
        numpy_helper.from_array(rng.normal(size=(10, 5)).astype(np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["h"], transB=1),
        helper.make_node("MatMul", ["h", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5])], weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_linear_work_counts_two_flops_per_multiply_add() -> None:
    work = linear_work(_linear_model())
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)
    gemm = 2 * 10 * 256
    matmul = 2 * 5 * 10
    assert work.nodes == 3
    assert work.flops == conv + gemm + matmul
    assert work.mean_flops == pytest.approx((conv + gemm + matmul) / 3)


@pytest.fixture
def asked(monkeypatch) -> list[bool]:
    """Calls of ort_threads.prefer_row_parallel made by plan_threads (nothing is changed in this process)."""
    calls: list[bool] = []
    monkeypatch.setattr(ort_threads, "prefer_row_parallel", lambda threads=None: calls.append(True) or True)
    return calls


@pytest.mark.parametrize(
    ("method", "gradients", "expected"),
    [("auto", "auto", True), ("exact", "graph", True), ("lanczos", "auto", False), ("power", "graph", False),
     ("auto", "fd", False)],
)
def test_only_the_exact_route_with_gradient_graphs_asks(asked, method, gradients, expected) -> None:
    plan_threads(intake(SAMPLE), AuditConfig(model_path=SAMPLE, method=method, gradients=gradients))
    assert bool(asked) == expected


def test_auto_on_many_classes_does_not_ask(asked, monkeypatch) -> None:
    monkeypatch.setattr(audit, "declared_classes", lambda selection: 1000)  # auto picks Lanczos there
    plan_threads(intake(SAMPLE), AuditConfig(model_path=SAMPLE))
    assert not asked


def test_a_gpu_audit_does_not_ask(asked) -> None:
    config = AuditConfig(model_path=SAMPLE, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    plan_threads(intake(SAMPLE), config)
    assert not asked


def test_large_kernels_do_not_ask(asked, monkeypatch) -> None:
    monkeypatch.setattr(audit, "ROW_PARALLEL_MAX_KERNEL_FLOPS", 1.0)
    plan_threads(intake(SAMPLE), AuditConfig(model_path=SAMPLE))
    assert not asked


def _sample_source():
    data = np.load("sample_models/digits_test.npy")[:3].astype(np.float32)
    prepared = prepare_model(intake(SAMPLE), AuditConfig(model_path=SAMPLE, gradients="graph"), data[:1])
    return make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source, data


def _dense_and_jvp(source, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    vectors = np.random.default_rng(1).normal(size=(5, source.input_size))
    dense, products = source.dense(data), source.jvp(data[0], vectors)
    return dense, products, (source.accounting.evaluations, source.accounting.runs)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_a_gradient_source_in_parts_returns_and_counts_what_whole_runs_do(monkeypatch, parts) -> None:
    whole_source, data = _sample_source()
    whole, whole_jvp, whole_cost = _dense_and_jvp(whole_source, data)
    monkeypatch.setattr(ort_threads, "_row_parts", parts)
    split, split_jvp, split_cost = _dense_and_jvp(_sample_source()[0], data)
    np.testing.assert_allclose(split, whole, rtol=1e-6, atol=1e-7 * np.abs(whole).max())
    np.testing.assert_allclose(split_jvp, whole_jvp, rtol=1e-6, atol=1e-7 * np.abs(whole_jvp).max())
    assert split_cost == whole_cost  # a run in parts is one run of the same rows
