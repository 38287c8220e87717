"""Property tests on random Fisher problems with known spectra: every estimator says what it is.

Every lower bound is <= exact lambda_max; every converged Lanczos or power estimate agrees with it
to 1e-4 relative and its interval [theta, theta + residual] holds it; budget-starved runs fall
back to lower bounds. Problems come from explicit seeds (hypothesis draws the seeds, derandomized).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.errors import InputError
from fimaudit.fisher.registry import get_estimator
from fimaudit.fisher.lanczos import lanczos_lambda_max
from fimaudit.fisher.power import power_lambda_max
from tests.fisher.fakes import random_problem

ROUNDING = 1e-9  # relative slack for float64 rounding in "bound <= exact"

problems = st.builds(
    lambda seed, classes, size, decay: random_problem(np.random.default_rng(seed), classes, size, decay),
    seed=st.integers(0, 2**32 - 1),
    classes=st.integers(2, 24),
    size=st.integers(3, 120),
    decay=st.sampled_from([1.0, 0.95, 0.7, 0.3]),
)


def check_claim(result, exact: float) -> None:
    """The result's kind is honest about ``exact``."""
    slack = ROUNDING * max(exact, 1e-300)
    if result.kind == "lower_bound":
        assert result.value <= exact + slack, result.diagnostics
    elif result.kind == "upper_bound":
        assert result.value >= exact - slack
    elif result.kind == "exact":
        assert result.value == pytest.approx(exact, rel=1e-9, abs=1e-15)
    if result.kind == "estimate" and result.diagnostics.get("converged"):
        assert result.value == pytest.approx(exact, rel=1e-4)
        low, high = result.interval
        assert low - slack <= exact <= high + slack
        assert result.value <= exact + slack  # a Rayleigh quotient


@settings(max_examples=40, deadline=None, derandomize=True)
@given(known=problems, seed=st.integers(0, 2**16))
def test_every_estimator_is_honest_about_lambda_max(known, seed: int) -> None:
    exact = known.lambda_max
    for name in ("exact", "lanczos", "power", "hutchinson", "auto"):
        result = get_estimator(name)(known.problem, None, np.random.default_rng(seed))
        check_claim(result, exact)
    blackbox = get_estimator("blackbox")(known.problem, None, np.random.default_rng(seed))
    low, high = blackbox.interval
    assert blackbox.kind == "estimate" and blackbox.confidence == 0.95
    assert 0 <= low <= blackbox.value <= high


@settings(max_examples=30, deadline=None, derandomize=True)
@given(known=problems, seed=st.integers(0, 2**16), budget=st.integers(3, 8))
def test_starved_iterations_report_lower_bounds(known, seed: int, budget: int) -> None:
    """With too few products the methods must not claim convergence they lack."""
    exact = known.lambda_max
    for run in (lanczos_lambda_max, power_lambda_max):
        result = run(known.problem, budget, np.random.default_rng(seed))
        check_claim(result, exact)
        assert result.matvecs <= budget
        if not result.diagnostics["converged"]:
            assert result.kind == "lower_bound"


@pytest.mark.parametrize("side", ["gram", "input"])
def test_lanczos_converges_on_both_sides(side: str) -> None:
    known = random_problem(np.random.default_rng(5), classes=30, size=200, decay=0.97)
    result = lanczos_lambda_max(known.problem, 200, np.random.default_rng(1), side=side)
    assert result.diagnostics["converged"] and result.diagnostics["side"] == side
    assert result.value == pytest.approx(known.lambda_max, rel=1e-8)
    eigenvector = result.eigenvector
    np.testing.assert_allclose(known.fisher @ eigenvector, result.value * eigenvector, atol=1e-6 * result.value)


def test_power_needs_more_products_on_close_eigenvalues() -> None:
    """Power iteration slows down as lambda_2 / lambda_1 -> 1; Lanczos much less."""
    known = random_problem(np.random.default_rng(8), classes=12, size=150, decay=0.99)
    power = power_lambda_max(known.problem, 400, np.random.default_rng(2))
    lanczos = lanczos_lambda_max(known.problem, 100, np.random.default_rng(2))
    assert lanczos.diagnostics["converged"]
    assert lanczos.matvecs < power.matvecs
    check_claim(power, known.lambda_max)


def test_lanczos_on_a_many_class_problem_beats_the_k_rows() -> None:
    """K = 200 classes: Lanczos converges in far fewer products than the K gradient rows of exact."""
    rng = np.random.default_rng(3)
    known = random_problem(rng, classes=200, size=210, decay=0.9)
    result = lanczos_lambda_max(known.problem, 100, np.random.default_rng(0))
    assert result.diagnostics["converged"]
    assert result.value == pytest.approx(known.lambda_max, rel=1e-6)
    assert result.matvecs < 100
    assert result.model_evaluations < 200


@pytest.mark.parametrize(
    "name, budget",
    [("lanczos", 2), ("power", 1), ("hutchinson", 5), ("blackbox", 19), ("blackbox", 0), ("lanczos", -1), ("auto", 2)],
)
def test_unusable_budgets_are_refused(name: str, budget: int) -> None:
    known = random_problem(np.random.default_rng(0), classes=5, size=20)
    with pytest.raises(InputError, match=name):
        get_estimator(name)(known.problem, budget, np.random.default_rng(0))


def test_noisy_operator_is_not_reported_as_converged() -> None:
    """ARPACK trusts its own residual estimate; the recomputed one exposes a non-linear operator."""
    from fimaudit.fisher.problem import SampleProblem
    from tests.fisher.fakes import NoisyJacobian

    known = random_problem(np.random.default_rng(4), classes=10, size=64, decay=0.8)
    clean = known.problem.jacobian
    noisy = NoisyJacobian(clean.weight, clean.bias, noise=1e-3)
    problem = SampleProblem(sample=known.problem.sample, logits=known.problem.logits, jacobian=noisy)
    result = lanczos_lambda_max(problem, 100, np.random.default_rng(0))
    assert not result.diagnostics["converged"]
    assert result.kind == "lower_bound"
    assert result.diagnostics["relative_residual"] > 1e-6
    assert result.value == pytest.approx(known.lambda_max, rel=1e-2)
