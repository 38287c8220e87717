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


def test_auto_falls_back_when_the_gradient_graph_cannot_run(tmp_path) -> None:
    """PaddleOCR's classifier at height 16: its last MaxPool sees one row, where ONNX Runtime's
    output size and the ONNX formula disagree; the gradient graph fails at run time, and
    --gradients auto must fall back to finite differences instead of failing the audit."""
    import numpy as np
    import pytest

    model = SAMPLES.parent / "tests" / "models" / "ppocr_text_direction_cls.onnx"
    if not model.is_file():
        pytest.skip("PaddleOCR model not present")
    data = tmp_path / "short.npy"
    np.save(data, np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32))
    result = run_audit(AuditConfig(model_path=str(model), data_path=str(data), gradients="auto", bounds=False))
    assert result.gradients == "fd"
    assert "could not be loaded or run" in result.gradients_note
    assert result.samples[0].result.value >= 0


def test_check_samples_sets_how_many_samples_the_gradient_check_compares() -> None:
    base = {"model_path": str(SAMPLES / "vgg_small.onnx"), "data_path": str(SAMPLES / "digits_test.npy"),
            "samples": 4, "gradients": "graph", "bounds": False}
    one = run_audit(AuditConfig(**base, check_samples=1))
    assert one.gradient_check is not None and one.gradient_check.samples == [0]
    assert one.gradient_check.passed
    none = run_audit(AuditConfig(**base, check_samples=0))
    assert none.gradient_check is None
    (entry,) = [check for check in none.checks if check.name == "gradient_check"]
    assert entry.status == "not_computed" and "--check-samples 0" in entry.detail
    assert [s.result.value for s in none.samples] == [s.result.value for s in one.samples], "the values do not change"
