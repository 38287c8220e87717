"""The ``exact`` method: the dense K x d Jacobian, then the K x K eigenproblem."""

from __future__ import annotations

import time

import numpy as np

from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult


@estimator("exact")
def exact(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Exact lambda_max; ``budget`` and ``rng`` are unused (its cost is fixed by the gradient source)."""
    start = time.perf_counter()
    before = problem.jacobian.accounting.evaluations
    jacobian = problem.jacobian.dense(problem.sample[None])[0]
    result = exact_lambda_max(jacobian, problem.logits)
    result.model_evaluations = problem.jacobian.accounting.evaluations - before
    result.seconds = time.perf_counter() - start
    return result
