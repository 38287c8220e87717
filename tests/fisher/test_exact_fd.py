"""Finite-difference lambda_max of sample models against independent dense float64 computations."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.fisher.covariance import softmax, softmax_covariance
from fimaudit.fisher.exact import exact_lambda_max
from tests.conftest import SAMPLES, linear_classifier


def dense_fisher_lambda_max(jacobian: np.ndarray, logits: np.ndarray) -> float:
    """lambda_max of the d x d matrix J^T (diag(p) - p p^T) J, formed densely in float64."""
    p = softmax(logits)
    covariance = np.diag(p) - np.outer(p, p)
    fisher = jacobian.T @ covariance @ jacobian
    return float(np.linalg.eigvalsh(fisher)[-1])


def mlp_weights() -> dict[str, np.ndarray]:
    model = onnx.load(SAMPLES / "mlp.onnx")
    return {init.name: numpy_helper.to_array(init).astype(np.float64) for init in model.graph.initializer}


def mlp_jacobian_float64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic Jacobian of Flatten-Gemm-Tanh-Gemm in float64."""
    weights = [w for name, w in sorted(mlp_weights().items())]
    matrices = sorted((w for w in weights if w.ndim == 2), key=lambda w: -w.shape[1])
    biases = {w.shape[0]: w for w in weights if w.ndim == 1}
    first, second = matrices  # [32, 64], [10, 32]
    hidden = np.tanh(first @ x.reshape(-1) + biases[first.shape[0]])
    logits = second @ hidden + biases[second.shape[0]]
    jacobian = second @ np.diag(1.0 - hidden**2) @ first
    return jacobian, logits


def test_mlp_fd_lambda_max_matches_analytic_float64(digits: np.ndarray) -> None:
    result = run_audit(AuditConfig(model_path=str(SAMPLES / "mlp.onnx"), data_path=str(SAMPLES / "digits_test.npy"), samples=12, gradients="fd"))
    for audit in result.samples:
        jacobian, logits = mlp_jacobian_float64(digits[audit.index].astype(np.float64))
        expected = dense_fisher_lambda_max(jacobian, logits)
        assert audit.result.kind == "exact"
        assert audit.result.value == pytest.approx(expected, rel=2e-3, abs=1e-9)


def float64_model(path) -> onnx.ModelProto:
    """The same model computing in float64 (weights and input cast), for the reference evaluator."""
    model = onnx.load(path)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    del model.graph.value_info[:]
    return model


def test_vgg_fd_lambda_max_matches_float64_reference(digits: np.ndarray) -> None:
    """ORT float32 finite differences vs the onnx reference evaluator in float64 (h = 1e-6)."""
    path = SAMPLES / "vgg_small.onnx"
    evaluator = ReferenceEvaluator(float64_model(path))
    count = 4
    result = run_audit(AuditConfig(model_path=str(path), data_path=str(SAMPLES / "digits_test.npy"), samples=count, gradients="fd"))
    for audit in result.samples:
        x = digits[audit.index : audit.index + 1].astype(np.float64)
        d = x.size
        h = 1e-6
        eye = np.eye(d).reshape((d, *x.shape[1:]))
        plus = evaluator.run(None, {"input": x + h * eye})[0]
        minus = evaluator.run(None, {"input": x - h * eye})[0]
        jacobian = ((plus - minus) / (2 * h)).T
        logits = evaluator.run(None, {"input": x})[0][0]
        expected = dense_fisher_lambda_max(jacobian, logits)
        assert audit.result.value == pytest.approx(expected, rel=5e-3)


def test_confident_sample_keeps_lambda_max_to_1e_3(save_model) -> None:
    """p_max = 0.99999: the K x K route from logits keeps lambda_max to 1e-3 relative."""
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((5, 6))
    x = rng.standard_normal(6)
    logits = weight @ x
    # Shift the top class so that its probability is 0.99999 exactly (others keep their ratios).
    top = int(np.argmax(logits))
    others = np.delete(logits, top)
    target_gap = np.log(0.99999 / (1 - 0.99999)) + np.log(np.exp(others - others.max()).sum()) + others.max()
    bias = np.zeros(5)
    bias[top] = target_gap - logits[top]
    model = linear_classifier(weight, bias)
    path = save_model(model)
    data = path.parent / "x.npy"
    np.save(data, x[None].astype(np.float32))

    weight32 = weight.astype(np.float32).astype(np.float64)
    bias32 = bias.astype(np.float32).astype(np.float64)
    x32 = x.astype(np.float32).astype(np.float64)
    exact_logits = weight32 @ x32 + bias32
    assert softmax(exact_logits).max() == pytest.approx(0.99999, abs=1e-8)
    expected = dense_fisher_lambda_max(weight32, exact_logits)

    result = run_audit(AuditConfig(model_path=str(path), data_path=str(data), gradients="fd"))
    assert result.samples[0].result.value == pytest.approx(expected, rel=1e-3)

    # The test is sensitive: C = diag(p) - p p^T formed in float32 misses by far more.
    z32 = exact_logits.astype(np.float32)
    e32 = np.exp(z32 - z32.max())
    p32 = e32 / e32.sum()
    naive_c = (np.diag(p32) - np.outer(p32, p32)).astype(np.float64)
    naive = np.linalg.eigvalsh(weight32.T @ naive_c @ weight32)[-1]
    assert abs(naive - expected) / expected > 1e-3


def test_covariance_diagonal_is_accurate_for_confident_logits() -> None:
    logits = np.array([30.0, 0.0, -1.0])
    covariance = softmax_covariance(logits)
    p_rest = np.exp(np.array([0.0, -1.0]) - 30.0)
    expected_top = (1.0 / (1.0 + p_rest.sum())) * p_rest.sum() / (1.0 + p_rest.sum())
    assert covariance[0, 0] == pytest.approx(expected_top, rel=1e-12)
    np.testing.assert_allclose(covariance.sum(axis=1), 0.0, atol=1e-15)


def test_exact_eigenvector_is_the_top_eigenvector_of_the_dense_fisher() -> None:
    rng = np.random.default_rng(0)
    jacobian = rng.standard_normal((4, 9))
    logits = rng.standard_normal(4)
    result = exact_lambda_max(jacobian, logits)
    p = softmax(logits)
    fisher = jacobian.T @ (np.diag(p) - np.outer(p, p)) @ jacobian
    values = np.linalg.eigvalsh(fisher)
    assert result.value == pytest.approx(values[-1], rel=1e-10)
    assert result.trace == pytest.approx(values.sum(), rel=1e-10)
    np.testing.assert_allclose(fisher @ result.eigenvector, values[-1] * result.eigenvector, atol=1e-10)
