"""The combined JVP session is made on its first run only (GraphJacobian._combined_jvp).

What is checked: an estimator that announces its products (a Lanczos audit) never makes the
combined session and gets the combined model's numbers from the kept halves; a J v that needs
the combined model after the split makes it then (its proto derived again) with the same
numbers; a combined model that ONNX Runtime refuses on its first run, after the kept halves
exist, turns J v over to the dense Jacobian and says so in ``forward_mode_unavailable``, and
the gradient check then reports the adjoint identity as not applicable; asked before any run,
``forward_mode_unavailable`` makes the session and reports a refusal at once.
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.errors import ModelError
from fimaudit.gradients import graph as graph_gradients
from fimaudit.gradients.finite_differences import FiniteDifferenceJacobian
from fimaudit.sanity import NOT_APPLICABLE, gradient_check


def _source():
    from fimaudit.audit import AuditConfig, intake, prepare_model
    from fimaudit.gradients import make_source

    path = "sample_models/resnet_small.onnx"
    data = np.load("sample_models/digits_test.npy")[:3].astype(np.float32)
    prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), data[:1])
    source = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    assert source.input_size == TANGENTS.shape[1]
    return source, data, prepared


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


TANGENTS = np.random.default_rng(11).normal(size=(3, 64))  # resnet_small reads 1x8x8 digits


@pytest.fixture
def refused(monkeypatch):
    """ONNX Runtime refusing the combined JVP model (and only it)."""
    made = graph_gradients._GradientSession.__init__

    def refuse(self, model, runner, seed, result):
        if seed == graph_gradients.TANGENT:
            raise ModelError("ONNX Runtime refused the JVP model (test)")
        made(self, model, runner, seed, result)

    monkeypatch.setattr(graph_gradients._GradientSession, "__init__", refuse)


def test_announced_products_never_make_the_combined_session() -> None:
    source, data, _ = _source()
    reference, _, _ = _source()
    expected = reference.jvp(data[0], TANGENTS)  # no announcement: the combined model runs
    assert reference._jvp is not None
    source.expect_products(data[0])
    cotangents = np.random.default_rng(12).normal(size=(2, source.num_classes))
    pulled = source.vjp(data[0], cotangents)
    pushed = [source.jvp(data[0], TANGENTS) for _ in range(3)]
    assert source._jvp is None and isinstance(source._jvp_kept, graph_gradients._KeptForwardSession)
    assert source.forward_mode_unavailable() is None and source._jvp is None  # the kept halves answer
    for result in pushed:
        _close(result, expected)
    _close(pulled, reference.vjp(data[0], cotangents))


def test_the_combined_session_is_made_when_a_run_needs_it_after_the_split() -> None:
    source, data, _ = _source()
    reference, _, _ = _source()
    source.expect_products(data[0])
    source.jvp(data[0], TANGENTS)
    assert source._jvp is None and source._jvp_model is None  # split: the proto was let go
    pushed = source.jvp(data[1], TANGENTS[:1])  # a new sample's first run: the combined model
    assert isinstance(source._jvp, graph_gradients._GradientSession)
    _close(pushed, reference.jvp(data[1], TANGENTS[:1]))


def test_a_combined_model_refused_on_its_first_run_falls_back_to_the_dense_jacobian(refused) -> None:
    source, data, _ = _source()
    source.expect_products(data[0])
    kept = source.jvp(data[0], TANGENTS)  # the kept halves load
    assert source.forward_mode_unavailable() is None
    pushed = source.jvp(data[1], TANGENTS[:1])  # needs the combined model: refused
    assert "refused the JVP model" in (source.forward_mode_unavailable() or "")
    dense = source.dense(data[:2])
    np.testing.assert_allclose(pushed, TANGENTS[:1] @ dense[1].reshape(source.num_classes, -1).T, rtol=1e-10)
    # From then on every J v uses the dense Jacobian, the kept halves too.
    again = source.jvp(data[0], TANGENTS)
    np.testing.assert_allclose(again, TANGENTS @ dense[0].reshape(source.num_classes, -1).T, rtol=1e-10)
    _close(again, kept)
    assert source._jvp_kept is None and source.gram_product(data[0], np.ones((1, source.num_classes))) is None


def test_asked_before_any_run_the_refusal_is_reported_at_once(refused) -> None:
    source, _, _ = _source()
    assert "refused the JVP model" in (source.forward_mode_unavailable() or "")


def test_the_gradient_check_reports_a_late_refusal_as_no_adjoint_identity(refused) -> None:
    source, data, prepared = _source()
    source.expect_products(data[0])
    source.jvp(data[0], TANGENTS)
    assert source.forward_mode_unavailable() is None  # what the check sees first
    differences = FiniteDifferenceJacobian(prepared.runner, prepared.selection.sample_shape, prepared.num_classes)
    check = gradient_check(source, differences.central_differences, data[1:3], np.random.default_rng(0), count=2)
    assert check.adjoint_status == NOT_APPLICABLE and not check.adjoint
    assert "refused the JVP model" in check.to_dict()["adjoint"]["reason"]
