"""The K x K arithmetic is exact to float64 on saturated softmaxes (issue 16, item 2).

Top probabilities 1 - 1e-12, 1 - 1e-14 and 1 - 1e-16 (logit gaps about 27.6, 32.2 and 36.8), a
random float32 Jacobian, optionally with a component every class gradient shares (g_k = a + b_k,
as real networks have): lambda_max and trace(F) from fimaudit's exact path and from its Fisher
operators against an independent reference, F = sum_i p_i (g_i - g_bar)(g_i - g_bar)^T formed in
60-digit decimal arithmetic (p from the logits by Decimal.exp, 1 - p_top never computed), then
rounded to float64 for one K x K eigenproblem (eigenvalue error <= eps ||F||).

Tolerances. The exact path's only errors are float64 rounding: the deviations g_k - g_r (exact for
float32 rows), sums of d = 48 products and a 10 x 10 eigh, a few hundred eps at most; measured
<= 3e-15, so 1e-12 leaves a margin of 300 and is 1e6 tighter than the issue's 1e-6. The operator
paths also multiply by J^T and J in float64 (here the fake's exact matrix products), whose sums
over K terms carry eps * |a| / |b| of the shared part: 1e-10 with |a| / |b| <= 1e3.
"""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest

from fimaudit.fisher.covariance import SoftmaxCovariance, covariance_sqrt, softmax_covariance
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.fisher.operator import FisherGramOperator, FisherOperator
from fimaudit.fisher.registry import get_estimator
from tests.fisher.fakes import matrix_problem

K, D = 10, 48
COMPLEMENTS = (1e-12, 1e-14, 1e-16)


def saturated_case(complement: float, shared: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(J float32 [K, D], logits [K] as float32 values) with 1 - p_top = ``complement``."""
    rng = np.random.default_rng(seed)
    jacobian = rng.standard_normal((K, D)) + shared * rng.standard_normal(D)
    logits = rng.standard_normal(K)
    top = int(rng.integers(K))
    others = np.delete(logits, top)
    # 1 - p_top = s / (s + e^{z_top}) with s = sum_{i != top} e^{z_i}: z_top = log s + log((1 - c) / c).
    logits[top] = np.log(np.exp(others).sum()) + np.log((1 - complement) / complement)
    return jacobian.astype(np.float32), logits.astype(np.float32).astype(np.float64)


def reference(jacobian: np.ndarray, logits: np.ndarray) -> tuple[float, float, float]:
    """(lambda_max, trace, 1 - p_top) of F = sum_i p_i (g_i - g_bar)(g_i - g_bar)^T in 60 digits."""
    getcontext().prec = 60
    z = [Decimal(float(v)) for v in logits]
    top = max(z)
    weights = [(v - top).exp() for v in z]
    total = sum(weights)
    p = [w / total for w in weights]
    rows = [[Decimal(float(v)) for v in row] for row in jacobian]
    mean = [sum(p[k] * rows[k][j] for k in range(K)) for j in range(D)]
    centred = [[p[k].sqrt() * (rows[k][j] - mean[j]) for j in range(D)] for k in range(K)]
    gram = np.array([[float(sum(a * b for a, b in zip(centred[i], centred[l]))) for l in range(K)] for i in range(K)])
    trace = float(sum(v * v for row in centred for v in row))
    complement = float(sum(weights[k] for k in range(K) if z[k] != top) / total)
    return float(np.linalg.eigvalsh(gram)[-1]), trace, complement


def relative(value: float, truth: float) -> float:
    return abs(value - truth) / abs(truth)


@pytest.mark.parametrize("shared", [0.0, 1e5])
@pytest.mark.parametrize("complement", COMPLEMENTS)
def test_exact_path_matches_the_extended_precision_reference(complement: float, shared: float) -> None:
    jacobian, logits = saturated_case(complement, shared, seed=int(-np.log10(complement)))
    truth, trace, actual_complement = reference(jacobian, logits)
    assert relative(actual_complement, complement) < 1e-5  # the case is as saturated as it says
    result = exact_lambda_max(jacobian, logits)
    assert relative(result.value, truth) <= 1e-12
    assert relative(result.trace, trace) <= 1e-12
    # The eigenvector is F's: F v = lambda v, with F applied as sum_i p_i (g_i - g_bar)(g_i - g_bar)^T.
    covariance = SoftmaxCovariance(logits)
    rows = covariance.factor(jacobian.astype(np.float64).T).T  # sqrt(p_k) (g_k - g_bar)
    image = rows.T @ (rows @ result.eigenvector)
    assert np.linalg.norm(image - result.value * result.eigenvector) <= 1e-12 * result.value


@pytest.mark.parametrize("complement", COMPLEMENTS)
def test_the_exact_estimator_and_both_operators_agree_with_the_reference(complement: float) -> None:
    jacobian, logits = saturated_case(complement, 1e3, seed=7)
    truth, trace, _ = reference(jacobian, logits)
    known = matrix_problem(jacobian.astype(np.float64), logits)
    estimated = get_estimator("exact")(known.problem, None, np.random.default_rng(0))
    assert relative(estimated.value, truth) <= 1e-12 and relative(estimated.trace, trace) <= 1e-12
    gram = FisherGramOperator(known.problem).matmat(np.eye(K))
    assert relative(float(np.linalg.eigvalsh(0.5 * (gram + gram.T))[-1]), truth) <= 1e-10
    assert relative(float(np.trace(gram)), trace) <= 1e-10
    fisher = FisherOperator(known.problem)
    dense = fisher.matmat(np.eye(D))
    assert relative(float(np.linalg.eigvalsh(0.5 * (dense + dense.T))[-1]), truth) <= 1e-10
    assert relative(float(fisher.quadratic_forms(np.eye(D)).sum()), trace) <= 1e-10


def test_the_reference_detects_the_eigen_decomposed_square_root() -> None:
    """The old sandwich C^{1/2} (J J^T) C^{1/2} loses digits here: the test can tell the difference."""
    jacobian, logits = saturated_case(1e-12, 1e6, seed=3)
    truth, _, _ = reference(jacobian, logits)
    root = covariance_sqrt(softmax_covariance(logits))
    jac = jacobian.astype(np.float64)
    old = float(np.linalg.eigvalsh(root @ (jac @ jac.T) @ root)[-1])
    assert relative(old, truth) > 1e-8
    assert relative(exact_lambda_max(jacobian, logits).value, truth) <= 1e-12


def test_covariance_products_keep_the_structure() -> None:
    """A^T A = C, A^T w sums to zero, and C 1 = 0 to rounding of p at p_top = 1 - 1e-16."""
    _, logits = saturated_case(1e-16, 0.0, seed=5)
    covariance = SoftmaxCovariance(logits)
    factor = covariance.factor(np.eye(K)).T  # columns A e_j -> A
    np.testing.assert_allclose(factor.T @ factor, softmax_covariance(logits), rtol=0, atol=1e-30)
    w = np.random.default_rng(0).standard_normal((4, K))
    cotangents = covariance.factor_transpose(w)
    assert np.all(np.abs(cotangents.sum(axis=1)) <= 1e-15 * np.abs(cotangents).sum(axis=1))
    np.testing.assert_allclose(cotangents, w @ factor, rtol=1e-12, atol=1e-30)
    assert np.abs(covariance.apply(np.ones((1, K)) * 3.0)).max() == 0.0
    assert covariance.complement == pytest.approx(1e-16, rel=1e-5)
