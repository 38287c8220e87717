"""Sanity checks (fimaudit/verdict.py): every check has a status, and one that did not run says so."""

from __future__ import annotations

from fimaudit.verdict import bound_check, convergence_check, gradient_check
from fimaudit.results import Bound
from tests.report.helpers import gradient_check as recorded_check
from tests.report.helpers import judged, sample


def test_every_check_is_reported_even_when_nothing_was_computed() -> None:
    checks = judged([sample(0, 1.0)], gradients="graph").checks
    assert [c.name for c in checks] == ["gradient_check", "convergence", "bound_check"]
    assert [c.status for c in checks] == ["not_computed", "not_applicable", "not_computed"]
    assert all(c.detail for c in checks)
    assert [set(c.to_dict()) for c in checks] == [{"name", "title", "status", "detail"}] * 3


def test_gradient_check_reads_the_recorded_outcome() -> None:
    assert gradient_check(None, "fd").status == "not_applicable"
    ok = gradient_check(recorded_check("passed"), "graph")
    assert ok.status == "passed" and "48 of 48 directions decided, 0 disagreeing beyond tolerance 0.02" in ok.detail
    assert gradient_check(recorded_check("failed"), "graph").status == "failed"
    assert gradient_check(recorded_check("passed", adjoint="failed"), "graph").status == "failed"


def test_convergence_counts_estimates_that_did_not_converge() -> None:
    samples = [
        sample(0, 1.0, "estimate", [0.9, 1.1], diagnostics={"converged": True}),
        sample(1, 2.0, "estimate", [1.9, 2.1], diagnostics={"converged": False}),
        sample(2, 3.0, "estimate", [2.9, 3.1]),
    ]
    check = convergence_check(samples)
    assert check.status == "failed"
    assert "1 of 2 estimates did not converge (samples 1); 1 did not report" in check.detail
    assert convergence_check([samples[2]]).status == "not_computed"
    assert convergence_check([samples[0]]).status == "passed"


def test_bound_check_uses_model_and_per_sample_bounds() -> None:
    samples = [sample(0, 1.0, bound=2.0), sample(1, 3.0, bound=2.5)]
    violated = bound_check(samples, Bound(10.0))
    assert violated.status == "failed" and "sample 1: 3 > its bound 2.5" in violated.detail
    model_only = bound_check([sample(0, 1.0), sample(1, 3.0)], Bound(2.0))
    assert model_only.status == "failed" and "model bound 2" in model_only.detail
    assert bound_check([sample(0, 1.0, bound=1.0005)], Bound(10.0)).status == "passed"
    # An estimate is held to the bottom of its interval: only a certain violation counts.
    assert bound_check([sample(0, 3.0, "estimate", [1.5, 3.5])], Bound(2.0)).status == "passed"
    # A bound that could not be certified is no bound to check against.
    assert bound_check([sample(0, 1.0)], Bound(None, details={"reason": "gates"})).status == "not_computed"


def test_a_gradient_check_that_did_not_decide_says_so() -> None:
    check = gradient_check(recorded_check("not_decided"), "graph")
    assert check.status == "not_decided"
    assert "0 of 48 directions decided" in check.detail and "not evidence of a wrong gradient" in check.detail
    assert "adjoint identity <u, J^T w> = <J u, w> passed" in check.detail
    failed = gradient_check(recorded_check("not_decided", adjoint="failed"), "graph")
    assert failed.status == "failed" and "adjoint identity <u, J^T w> = <J u, w> failed" in failed.detail
    alone = gradient_check(recorded_check("passed", adjoint=None), "graph")
    assert "adjoint identity not applicable (no forward-mode graph)" in alone.detail
