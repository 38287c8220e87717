"""The reference code's two randomised "estimators", reproduced for comparison only (not in fimaudit).

Both are maxima of random Rayleigh quotients v^T F v over unit vectors v, so both are lower
bounds on lambda_max, and for d-dimensional inputs they track trace(F) / d rather than lambda_max:
for a dominant eigenvector u, v^T F v ~ lambda_max (u . v)^2 with (u . v)^2 ~ chi2_1 / d, and the
largest of 100 chi2_1 draws is about 6.6, so the maximum is ~ 6.6 lambda_max / d.

- ``paper_blackbox``: central differences (h = 1e-3) of log p along m = 100 random unit directions,
  maximum of sum_y p_y (v . s_y)^2 (= v^T F v). Forward passes only: 2 m evaluations.
- ``paper_max_rayleigh``: what the reference code calls "Hutchinson": the maximum of v^T F v over
  100 random unit vectors, with exact J v (one jvp each).
"""

from __future__ import annotations

import time

import numpy as np

from fimaudit.fisher.covariance import log_softmax, softmax
from fimaudit.fisher.operator import CostMeter, FisherOperator
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.result import SpectralResult


def unit_directions(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    directions = rng.standard_normal((count, size))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def paper_blackbox(problem: SampleProblem, rng: np.random.Generator, directions: int = 100, step: float = 1e-3) -> SpectralResult:
    """max over random unit v of sum_y p_y (d/dt log p_y(x + t v))^2, by central differences."""
    started = time.perf_counter()
    before = problem.jacobian.accounting.evaluations
    sample = np.asarray(problem.sample)
    flat = sample.reshape(-1).astype(np.float64)
    vectors = unit_directions(rng, directions, flat.size)
    plus = (flat[None] + step * vectors).astype(sample.dtype)
    minus = (flat[None] - step * vectors).astype(sample.dtype)
    logits = problem.jacobian.logits(np.concatenate([plus, minus]).reshape((-1, *sample.shape)))
    log_p = log_softmax(np.asarray(logits, dtype=np.float64).reshape(2 * directions, -1))
    scores = (log_p[:directions] - log_p[directions:]) / (2.0 * step)  # v . s_y, [m, K]
    quadratic = scores**2 @ softmax(problem.logits)  # sum_y p_y (v . s_y)^2 = v^T F v
    return SpectralResult(
        value=float(quadratic.max()),
        kind="lower_bound",
        model_evaluations=int(problem.jacobian.accounting.evaluations - before),
        seconds=time.perf_counter() - started,
        diagnostics={"mean_quadratic_form": float(quadratic.mean())},
    )


def paper_max_rayleigh(problem: SampleProblem, rng: np.random.Generator, vectors: int = 100) -> SpectralResult:
    """max over random unit v of v^T F v (white box): the reference code's "Hutchinson"."""
    meter = CostMeter(problem)
    operator = FisherOperator(problem, meter)
    forms = operator.quadratic_forms(unit_directions(rng, vectors, problem.input_size).T)
    return SpectralResult(
        value=float(forms.max()),
        kind="lower_bound",
        matvecs=meter.matvecs,
        model_evaluations=meter.model_evaluations,
        seconds=meter.seconds,
    )
