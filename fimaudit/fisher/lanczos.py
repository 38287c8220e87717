"""The ``lanczos`` method: lambda_max by implicitly restarted Lanczos (scipy ``eigsh``, ARPACK).

For many classes (K in the hundreds or thousands) the exact route needs all K gradient rows;
Lanczos needs one jvp and one vjp per product and usually far fewer products than K. It runs on
the K x K operator C^{1/2} J J^T C^{1/2} by default (same spectrum as F, short vectors; see
operator.py).

What the result claims, and why:
- every value reported is a Rayleigh quotient of the operator, hence <= lambda_max: certain;
- ``converged``: the explicitly recomputed residual r = ||B u - theta u|| (u unit) is at most
  ``tol * theta``. An eigenvalue then lies within r of theta (symmetric residual bound). It is
  lambda_max unless the iteration converged to a lower eigenvalue, which a random start makes
  unlikely but no residual can rule out; the interval [theta, theta + r] is reported with that
  caveat (``confidence`` None: it is not a statistical statement) and kind "estimate";
- not converged within the budget (ARPACK stopped, or the products ran out): kind
  "lower_bound", the best Rayleigh quotient seen.

Budget: operator products (matvecs), including the one residual check; default 100.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

from fimaudit.fisher.operator import CostMeter, FisherGramOperator, FisherOperator, make_operator, resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult

logger = logging.getLogger(__name__)

DEFAULT_MATVECS = 100
MINIMUM_MATVECS = 3
DEFAULT_TOL = 1e-6
_MAX_NCV = 20


class _BudgetExhausted(Exception):
    """Raised inside a product to stop ARPACK when the budget is spent (caught below)."""


@dataclass
class TopEigenpair:
    """The outcome of an iterative top-eigenvalue solver on a symmetric PSD operator."""

    value: float
    vector: np.ndarray
    residual: float
    converged: bool
    matvecs: int
    stop_reason: str


class _Budgeted(LinearOperator):
    """Counts products, stops at the budget, and keeps the best Rayleigh quotient seen.

    Every product v -> A v yields the certain lower bound v^T A v / v^T v, so even a run stopped
    early has something true to report.
    """

    def __init__(self, operator: LinearOperator, budget: int) -> None:
        self.inner = operator
        self.budget = budget
        self.used = 0
        self.best_value = -np.inf
        self.best_vector: np.ndarray | None = None
        self.best_image: np.ndarray | None = None
        super().__init__(dtype=np.dtype(np.float64), shape=operator.shape)

    def apply(self, vector: np.ndarray) -> np.ndarray:
        if self.used >= self.budget:
            raise _BudgetExhausted
        self.used += 1
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        image = np.asarray(self.inner.matvec(vector), dtype=np.float64).reshape(-1)
        norm2 = float(vector @ vector)
        if norm2 > 0:
            quotient = float(vector @ image) / norm2
            if quotient > self.best_value:
                scale = 1.0 / np.sqrt(norm2)
                self.best_value, self.best_vector, self.best_image = quotient, vector * scale, image * scale
        return image

    def _matvec(self, vector: np.ndarray) -> np.ndarray:
        return self.apply(vector)

    def _adjoint(self) -> _Budgeted:
        return self


def _residual(vector: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """(theta, ||A u - theta u||) for a unit vector u and its image A u."""
    theta = float(vector @ image)
    return theta, float(np.linalg.norm(image - theta * vector))


def lanczos_top(
    operator: LinearOperator, budget: int, rng: np.random.Generator, tol: float = DEFAULT_TOL
) -> TopEigenpair:
    """Top eigenpair of a symmetric PSD ``operator`` within ``budget`` products (see module doc)."""
    size = operator.shape[0]
    counted = _Budgeted(operator, budget)
    if size == 1:
        image = counted.apply(np.ones(1))
        value = float(image[0])
        return TopEigenpair(max(value, 0.0), np.ones(1), 0.0, True, counted.used, "one-dimensional operator")
    start = rng.standard_normal(size)
    ncv = int(min(size, _MAX_NCV, max(2, budget - 1)))
    stop_reason = "converged"
    try:
        _values, vectors = eigsh(
            counted, k=1, which="LA", v0=start, ncv=ncv, maxiter=max(1, budget), tol=tol / 10.0
        )
        vector = vectors[:, 0] / np.linalg.norm(vectors[:, 0])
        image = counted.apply(vector)  # the residual check: one product, inside the budget
        theta, residual = _residual(vector, image)
        converged = residual <= tol * max(theta, 0.0)
        if not converged:
            stop_reason = f"ARPACK stopped but the recomputed residual {residual:.3g} exceeds tol * theta"
    except _BudgetExhausted:
        converged, stop_reason = False, "budget exhausted"
        theta = residual = float("nan")
    except ArpackNoConvergence:
        converged, stop_reason = False, "ARPACK did not converge within its iterations"
        theta = residual = float("nan")
    except ArpackError as exc:  # breakdown on a numerically zero operator and the like
        converged, stop_reason = False, f"ARPACK error: {exc}"
        theta = residual = float("nan")
    if converged and theta >= counted.best_value - tol * max(theta, 0.0):
        return TopEigenpair(max(theta, 0.0), vector, residual, True, counted.used, stop_reason)
    if converged:
        # A product along the way had a larger Rayleigh quotient: ARPACK converged to a lower
        # eigenvalue. Say so and fall back to the certain lower bound.
        stop_reason = "converged to an eigenvalue below a Rayleigh quotient seen earlier"
    if counted.best_vector is None or counted.best_image is None:  # set together
        return TopEigenpair(0.0, start / np.linalg.norm(start), float("inf"), False, counted.used, stop_reason)
    best_theta, best_residual = _residual(counted.best_vector, counted.best_image)
    return TopEigenpair(max(best_theta, 0.0), counted.best_vector, best_residual, False, counted.used, stop_reason)


def eigenpair_result(pair: TopEigenpair, method: str, tol: float) -> SpectralResult:
    """A SpectralResult that says what the eigenpair is worth (shared by lanczos and power)."""
    diagnostics = {
        "method": method,
        "converged": bool(pair.converged),
        "residual": float(pair.residual),
        "relative_residual": float(pair.residual / pair.value) if pair.value > 0 else None,
        "tol": float(tol),
        "stop_reason": pair.stop_reason,
    }
    if pair.converged:
        diagnostics["interval_basis"] = (
            "[rayleigh quotient, + residual]: the lower end is certain; the upper end holds if the "
            "iteration found the top eigenvalue (residual bound), not a statistical confidence"
        )
        return SpectralResult(
            value=pair.value,
            kind="estimate",
            interval=(pair.value, pair.value + pair.residual),
            diagnostics=diagnostics,
        )
    return SpectralResult(value=pair.value, kind="lower_bound", diagnostics=diagnostics)


def operator_result(
    pair: TopEigenpair, method: str, tol: float, operator: FisherOperator | FisherGramOperator, meter: CostMeter
) -> SpectralResult:
    """The result of an iterative method: value and kind, F's eigenvector, the side used, costs."""
    result = eigenpair_result(pair, method, tol)
    if isinstance(operator, FisherGramOperator):
        result.eigenvector = operator.lift(pair.vector)
        result.diagnostics["side"] = "gram"
    else:
        result.eigenvector = pair.vector
        result.diagnostics["side"] = "input"
    result.matvecs = meter.matvecs
    result.model_evaluations = meter.model_evaluations
    result.seconds = meter.seconds
    result.diagnostics.update(meter.costs())
    return result


def lanczos_lambda_max(
    problem: SampleProblem,
    num_matvecs: int | None,
    rng: np.random.Generator,
    tol: float = DEFAULT_TOL,
    side: str = "auto",
) -> SpectralResult:
    """lambda_max(F) by Lanczos within ``num_matvecs`` operator products (None: 100)."""
    matvecs = resolve_budget("lanczos", num_matvecs, DEFAULT_MATVECS, MINIMUM_MATVECS, "operator products")
    meter = CostMeter(problem)
    operator = make_operator(problem, side, meter)
    pair = lanczos_top(operator, matvecs, rng, tol)
    if not pair.converged:
        logger.debug("lanczos: %s after %d products; reporting a lower bound", pair.stop_reason, pair.matvecs)
    return operator_result(pair, "lanczos", tol, operator, meter)


@estimator("lanczos")
def lanczos(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Lanczos on the Fisher operator; ``budget`` = operator products (default 100)."""
    return lanczos_lambda_max(problem, budget, rng)
