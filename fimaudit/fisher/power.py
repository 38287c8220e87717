"""The ``power`` method: power iteration on F v = J^T C (J v), as the paper describes.

Each step applies F once to the current unit vector v and reads, at no extra cost,
theta = v^T F v (a Rayleigh quotient: always <= lambda_max) and the residual
r = ||F v - theta v||. The iteration stops when r <= ``tol * theta`` (kind "estimate", interval
[theta, theta + r] with the caveat of lanczos.py: the lower end is certain, the upper end holds if
the iteration found the top eigenvalue, which a random start gives almost surely), or when the
budget of products is spent (kind "lower_bound": the largest Rayleigh quotient seen).

Power iteration converges like (lambda_2 / lambda_1)^k; on nearly degenerate spectra Lanczos
needs far fewer products. It is kept because the paper uses it and because it is the simplest
solver to trust.

Budget: operator products; default 200.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from fimaudit.fisher.lanczos import TopEigenpair, operator_result
from fimaudit.fisher.operator import CostMeter, make_operator, resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult

DEFAULT_MATVECS = 200
MINIMUM_MATVECS = 2
DEFAULT_TOL = 1e-6


def power_top(
    operator: LinearOperator, budget: int, rng: np.random.Generator, tol: float = DEFAULT_TOL
) -> TopEigenpair:
    """Power iteration from a Gaussian start, at most ``budget`` products (see module doc)."""
    vector = rng.standard_normal(operator.shape[0])
    vector /= np.linalg.norm(vector)
    best = TopEigenpair(0.0, vector, float("inf"), False, 0, "budget exhausted")
    for used in range(1, budget + 1):
        image = np.asarray(operator.matvec(vector), dtype=np.float64).reshape(-1)
        theta = float(vector @ image)
        residual = float(np.linalg.norm(image - theta * vector))
        if theta >= best.value:
            best = TopEigenpair(max(theta, 0.0), vector, residual, False, used, "budget exhausted")
        if residual <= tol * max(theta, 0.0):
            return TopEigenpair(max(theta, 0.0), vector, residual, True, used, "converged")
        norm = float(np.linalg.norm(image))
        if norm == 0.0:  # v in the null space of F: F may be zero; nothing more to learn
            return TopEigenpair(0.0, vector, 0.0, theta == 0.0 and residual == 0.0, used, "zero image")
        vector = image / norm
    best.matvecs = budget
    return best


def power_lambda_max(
    problem: SampleProblem,
    num_matvecs: int | None,
    rng: np.random.Generator,
    tol: float = DEFAULT_TOL,
    side: str = "input",
) -> SpectralResult:
    """lambda_max(F) by power iteration within ``num_matvecs`` products (None: 200, input side)."""
    matvecs = resolve_budget("power", num_matvecs, DEFAULT_MATVECS, MINIMUM_MATVECS, "operator products")
    meter = CostMeter(problem)
    operator = make_operator(problem, side, meter)
    pair = power_top(operator, matvecs, rng, tol)
    result = operator_result(pair, "power", tol, operator, meter)
    result.diagnostics["iterations"] = pair.matvecs
    return result


@estimator("power")
def power(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Power iteration on F (input side, as in the paper); ``budget`` = operator products (default 200)."""
    return power_lambda_max(problem, budget, rng)
