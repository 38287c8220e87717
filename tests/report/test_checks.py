"""Sanity checks: every check has a status, and one that did not run says so."""

from __future__ import annotations

from fimaudit.report.checks import bound_check, convergence_check, gradient_check, sanity_checks
from tests.report.helpers import sample, synthetic_document


def test_every_check_is_reported_even_when_nothing_was_computed() -> None:
    checks = sanity_checks(synthetic_document([sample(0, 1.0)], gradients="graph"))
    assert [c["name"] for c in checks] == ["gradient_check", "convergence", "bound_check"]
    assert [c["status"] for c in checks] == ["not_computed", "not_applicable", "not_computed"]
    assert all(c["detail"] for c in checks)


def test_gradient_check_reads_the_recorded_outcome() -> None:
    fd = gradient_check(synthetic_document([sample(0, 1.0)], gradients="fd"))
    assert fd["status"] == "not_applicable"
    recorded = {"passed": True, "max_jacobian_relative_error": 1e-5, "tolerance": 0.02, "samples": [0, 1, 2]}
    ok = gradient_check(synthetic_document([sample(0, 1.0)], gradients="graph", gradient_check=recorded))
    assert ok["status"] == "passed" and "Max jacobian relative error" not in ok["detail"] and "1e-05" in ok["detail"]
    bad = gradient_check(synthetic_document([sample(0, 1.0)], gradients="graph", gradient_check={**recorded, "passed": False}))
    assert bad["status"] == "failed"
    unknown = gradient_check(synthetic_document([sample(0, 1.0)], gradients="graph", gradient_check={"error": 0.1}))
    assert unknown["status"] == "not_computed"


def test_convergence_counts_estimates_that_did_not_converge() -> None:
    samples = [
        sample(0, 1.0, "estimate", [0.9, 1.1], diagnostics={"converged": True}),
        sample(1, 2.0, "estimate", [1.9, 2.1], diagnostics={"converged": False}),
        sample(2, 3.0, "estimate", [2.9, 3.1]),
    ]
    check = convergence_check(synthetic_document(samples))
    assert check["status"] == "failed"
    assert "1 of 2 estimates did not converge (samples 1); 1 did not report" in check["detail"]
    silent = convergence_check(synthetic_document([samples[2]]))
    assert silent["status"] == "not_computed"
    fine = convergence_check(synthetic_document([samples[0]]))
    assert fine["status"] == "passed"


def test_bound_check_uses_model_and_per_sample_bounds() -> None:
    samples = [sample(0, 1.0, bound=2.0), sample(1, 3.0, bound={"value": 2.5, "kind": "upper_bound"})]
    violated = bound_check(synthetic_document(samples, bound={"value": 10.0, "kind": "upper_bound"}))
    assert violated["status"] == "failed" and "sample 1: 3 > its bound 2.5" in violated["detail"]
    model_only = bound_check(synthetic_document([sample(0, 1.0), sample(1, 3.0)], bound={"value": 2.0, "kind": "upper_bound"}))
    assert model_only["status"] == "failed" and "model bound 2" in model_only["detail"]
    within = bound_check(synthetic_document([sample(0, 1.0, bound=1.0005)], bound={"value": 10.0, "kind": "upper_bound"}))
    assert within["status"] == "passed"
    # An estimate is held to the bottom of its interval: only a certain violation counts.
    estimate = bound_check(synthetic_document([sample(0, 3.0, "estimate", [1.5, 3.5])], bound={"value": 2.0}))
    assert estimate["status"] == "passed"


def test_a_gradient_check_that_did_not_decide_says_so() -> None:
    recorded = {
        "status": "not_decided", "passed": False, "directions_per_sample": 16, "tolerance": 0.02,
        "finite_differences": {"status": "not_decided", "per_sample": [{"directions_decided": 0, "directions_disagreeing": 0}] * 3},
        "adjoint": {"status": "passed", "reason": None, "per_sample": [{"max_relative_discrepancy": 4e-8, "tolerance": 2.4e-4}]},
    }
    check = gradient_check(synthetic_document([sample(0, 1.0)], gradients="graph", gradient_check=recorded))
    assert check["status"] == "not_decided"
    assert "0 of 48 directions decided" in check["detail"] and "not evidence of a wrong gradient" in check["detail"]
    assert "adjoint identity <u, J^T w> = <J u, w> passed" in check["detail"]
    failed = gradient_check(synthetic_document([sample(0, 1.0)], gradients="graph", gradient_check={
        **recorded, "status": "failed", "adjoint": {"status": "failed", "per_sample": [{"max_relative_discrepancy": 0.3, "tolerance": 2.4e-4}]}}))
    assert failed["status"] == "failed" and "adjoint identity <u, J^T w> = <J u, w> failed" in failed["detail"]
