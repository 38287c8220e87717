"""The matrix-free Fisher operators against dense F = J^T C J, and their cost accounting."""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.errors import InputError
from fimaudit.fisher.covariance import softmax, softmax_covariance
from fimaudit.fisher.operator import (
    CostMeter,
    FisherGramOperator,
    FisherOperator,
    choose_side,
    fisher_rank_bound,
    resolve_budget,
)
from tests.fisher.fakes import random_problem


@pytest.fixture
def known():
    return random_problem(np.random.default_rng(11), classes=7, size=40, decay=0.7)


def test_fisher_operator_matches_dense(known) -> None:
    operator = FisherOperator(known.problem)
    assert operator.dtype == np.float64 and operator.shape == (40, 40)
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(40)
    block = rng.standard_normal((40, 5))
    np.testing.assert_allclose(operator.matvec(vector), known.fisher @ vector, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(operator.matmat(block), known.fisher @ block, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(operator.quadratic_forms(block), np.einsum("ij,ij->j", block, known.fisher @ block), rtol=1e-12)
    assert operator.meter.matvecs == 1 + 5 + 5
    # matvec and matmat pay a jvp and a vjp per column; quadratic forms a jvp only.
    assert operator.meter.jvp_rows == 11 and operator.meter.vjp_rows == 6
    assert operator.meter.model_evaluations == 17


def test_gram_operator_has_the_nonzero_spectrum_of_f(known) -> None:
    operator = FisherGramOperator(known.problem)
    assert operator.dtype == np.float64 and operator.shape == (7, 7)
    gram = operator.matmat(np.eye(7))
    weight = known.problem.jacobian.weight
    # B = A W W^T A^T with C = A^T A, A = diag(sqrt p) (I - 1 p^T) (no square root of C).
    p = softmax(known.problem.logits)
    factor = np.sqrt(p)[:, None] * (np.eye(7) - np.outer(np.ones(7), p))
    np.testing.assert_allclose(factor.T @ factor, softmax_covariance(known.problem.logits), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gram, factor @ weight @ weight.T @ factor.T, rtol=1e-10, atol=1e-12)
    top = np.sort(np.linalg.eigvalsh(gram))[::-1]
    np.testing.assert_allclose(top[:6], np.sort(known.eigenvalues)[::-1][:6], rtol=1e-9)
    values, vectors = np.linalg.eigh(gram)
    lifted = operator.lift(vectors[:, -1])
    np.testing.assert_allclose(known.fisher @ lifted, values[-1] * lifted, rtol=1e-8, atol=1e-10)


def test_sides_and_rank_bound(known) -> None:
    assert choose_side(known.problem, "auto") == "gram"
    assert choose_side(known.problem, "input") == "input"
    with pytest.raises(InputError):
        choose_side(known.problem, "sideways")
    assert fisher_rank_bound(known.problem) == 6


def test_meter_reads_the_sources_accounting(known) -> None:
    source = known.problem.jacobian
    source.logits(np.zeros((3, 40)))  # paid before the meter starts: not charged
    meter = CostMeter(known.problem)
    meter.jvp(np.ones((2, 40)))
    meter.vjp(np.ones((4, 7)))
    assert meter.model_evaluations == 6
    assert meter.costs() == {"jvp_rows": 2, "vjp_rows": 4, "gradient_source": "matrix"}


@pytest.mark.parametrize("budget, message", [(0, "positive"), (-3, "positive"), (2, "too small"), (2.5, "whole number")])
def test_budget_validation(budget, message) -> None:
    with pytest.raises(InputError, match=message):
        resolve_budget("lanczos", budget, default=100, minimum=3, unit="operator products")


def test_budget_default() -> None:
    assert resolve_budget("lanczos", None, default=100, minimum=3, unit="operator products") == 100
    assert resolve_budget("lanczos", 3, default=100, minimum=3, unit="operator products") == 3
