"""run_audit's own duties: eigenvectors kept for the report, the gradient check recorded."""

from __future__ import annotations

from fimaudit.audit import EIGENVECTORS_KEPT, AuditConfig, run_audit
from tests.conftest import SAMPLES


def test_only_the_most_sensitive_samples_keep_their_eigenvectors() -> None:
    config = AuditConfig(model_path=str(SAMPLES / "mlp.onnx"), data_path=str(SAMPLES / "digits_test.npy"), samples=EIGENVECTORS_KEPT + 5, gradients="fd")
    result = run_audit(config)
    ranked = sorted(result.samples, key=lambda audit: audit.result.value, reverse=True)
    kept = [audit.result.eigenvector is not None for audit in ranked]
    assert kept == [True] * EIGENVECTORS_KEPT + [False] * 5
    assert result.gradient_check is None


def test_graph_gradients_come_with_a_passing_gradient_check() -> None:
    config = AuditConfig(model_path=str(SAMPLES / "vgg_small.onnx"), data_path=str(SAMPLES / "digits_test.npy"), samples=4, gradients="graph")
    result = run_audit(config)
    assert result.gradients == "graph"
    assert result.gradient_check is not None and result.gradient_check.passed
    assert len(result.gradient_check.relative_errors) == 3
