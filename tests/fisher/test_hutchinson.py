"""Hutchinson and Hutch++ are genuine trace estimators: they converge to the true trace."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

from fimaudit.fisher.hutchinson import hutch_plus_plus_trace, hutchinson_result, hutchinson_trace
from tests.fisher.fakes import random_problem


def psd_matrix(seed: int, size: int = 120, decay: float = 0.97) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((size, size)))
    return (basis * decay ** np.arange(size)) @ basis.T


@pytest.mark.parametrize("estimate, budgets", [(hutchinson_trace, (12, 300, 3000)), (hutch_plus_plus_trace, (12, 60, 240))])
def test_error_shrinks_with_the_budget(estimate, budgets) -> None:
    matrix = psd_matrix(0)
    truth = float(np.trace(matrix))
    operator = aslinearoperator(matrix)
    errors = []
    for budget in budgets:
        runs = [estimate(operator, budget, np.random.default_rng(seed)) for seed in range(20)]
        errors.append(float(np.mean([abs(run.value - truth) / truth for run in runs])))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_hutch_plus_plus_beats_hutchinson_on_a_decaying_spectrum() -> None:
    matrix = psd_matrix(1, decay=0.9)
    truth = float(np.trace(matrix))
    operator = aslinearoperator(matrix)
    plain = [abs(hutchinson_trace(operator, 60, np.random.default_rng(s)).value - truth) for s in range(30)]
    plus = [abs(hutch_plus_plus_trace(operator, 60, np.random.default_rng(s)).value - truth) for s in range(30)]
    assert np.mean(plus) < 0.5 * np.mean(plain)


def test_intervals_cover_the_trace_most_of_the_time() -> None:
    matrix = psd_matrix(2, decay=0.99)
    truth = float(np.trace(matrix))
    operator = aslinearoperator(matrix)
    for estimate in (hutchinson_trace, hutch_plus_plus_trace):
        covered = [estimate(operator, 90, np.random.default_rng(s)).interval for s in range(200)]
        rate = np.mean([low <= truth <= high for low, high in covered])
        assert rate >= 0.88, (estimate.__name__, rate)


def test_hutch_plus_plus_is_exact_once_the_sketch_spans_the_range() -> None:
    """F has rank <= K - 1: a sketch of K - 1 columns captures it all."""
    known = random_problem(np.random.default_rng(6), classes=8, size=300, decay=0.8)
    result = hutchinson_result(known.problem, 30, np.random.default_rng(0))
    assert result.trace == pytest.approx(known.trace, rel=1e-9)
    assert result.diagnostics["sketch_size"] == 10
    low, high = result.diagnostics["trace_interval"]
    assert high - low < 1e-9 * known.trace


@pytest.mark.parametrize("variant", ["hutchinson", "hutch++"])
def test_fisher_trace_and_the_lower_bound_it_gives(variant: str) -> None:
    known = random_problem(np.random.default_rng(7), classes=40, size=200, decay=0.95)
    result = hutchinson_result(known.problem, 600, np.random.default_rng(1), variant=variant)
    assert result.kind == "lower_bound"
    assert result.trace == pytest.approx(known.trace, rel=0.1)
    low, high = result.diagnostics["trace_interval"]
    slack = 1e-9 * known.trace  # Hutch++ is exact here: a zero-width interval, up to rounding
    assert low - slack <= known.trace <= high + slack
    assert result.value == pytest.approx(max(low, 0.0) / 39)
    assert result.value <= known.lambda_max * (1 + 1e-9)
    # Hutchinson probes need J v only: no vjp at all.
    if variant == "hutchinson":
        assert result.diagnostics["vjp_rows"] == 0
