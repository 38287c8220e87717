"""The Fisher information of one sample as a matrix-free operator, and what applying it costs.

F = J^T C J (C = diag(p) - p p^T) is d x d but has rank <= K - 1, and d can be 10^6: it is never
formed. Two operators give its non-zero spectrum:

- ``FisherOperator`` (d x d): F v = J^T (C (J v)), one jvp and one vjp per product;
- ``FisherGramOperator`` (K x K): B w = A J (J^T (A^T w)), one vjp and one jvp, with C = A^T A
  (``covariance.SoftmaxCovariance``: no square root of C is taken, and the cotangents A^T w sum
  to zero to float64 rounding even when p_max = 1 - 1e-16).

Both cost the same gradient passes per product; the K x K side keeps the Krylov vectors K long
instead of d long and reaches its full Krylov space in K steps, so iterative solvers prefer it
whenever K < d. ``lift`` maps a K-side eigenvector u to F's eigenvector J^T A^T u.
The K x K arithmetic around the gradient products is float64 and works with deviations from the
mean class (covariance.py), so it adds nothing to the products' own (float32) error.

``CostMeter`` records what an estimator paid: products, jvp/vjp rows, and the model evaluations
counted by the gradient source's own accounting (the only honest cost across fd and graph).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import LinearOperator

from fimaudit.errors import InputError
from fimaudit.fisher.covariance import SoftmaxCovariance
from fimaudit.fisher.problem import SampleProblem
from fimaudit.gradients.base import expect_products, gram_product


@dataclass
class CostMeter:
    """Cost of one estimator run on one sample, read from the gradient source's accounting."""

    problem: SampleProblem
    matvecs: int = 0
    jvp_rows: int = 0
    vjp_rows: int = 0
    _evaluations_before: int = field(init=False, default=0)
    _started: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._evaluations_before = self.problem.jacobian.accounting.evaluations
        self._started = time.perf_counter()
        # A meter is an estimator's: tens of products at this sample follow (base.expect_products).
        expect_products(self.problem.jacobian, self.problem.sample)

    @property
    def model_evaluations(self) -> int:
        """Model evaluations since the meter started (rows run through ONNX Runtime)."""
        return int(self.problem.jacobian.accounting.evaluations - self._evaluations_before)

    @property
    def seconds(self) -> float:
        """Wall-clock seconds since the meter started."""
        return time.perf_counter() - self._started

    def jvp(self, tangents: np.ndarray) -> np.ndarray:
        """J v for tangents [M, d] -> [M, K] (float64)."""
        self.jvp_rows += int(tangents.shape[0])
        out = self.problem.jacobian.jvp(self.problem.sample, np.ascontiguousarray(tangents, dtype=np.float64))
        return np.asarray(out, dtype=np.float64)

    def vjp(self, cotangents: np.ndarray) -> np.ndarray:
        """J^T u for cotangents [M, K] -> [M, d] (float64)."""
        self.vjp_rows += int(cotangents.shape[0])
        out = self.problem.jacobian.vjp(self.problem.sample, np.ascontiguousarray(cotangents, dtype=np.float64))
        return np.asarray(out, dtype=np.float64)

    def gram(self, cotangents: np.ndarray) -> np.ndarray:
        """J J^T u for cotangents [M, K] -> [M, K] (float64), counted as a vjp and a jvp.

        One fused run where the source offers it (``base.gram_product``), else a vjp then a jvp.
        """
        rows = np.ascontiguousarray(cotangents, dtype=np.float64)
        fused = gram_product(self.problem.jacobian, self.problem.sample, rows)
        if fused is None:
            return self.jvp(self.vjp(rows))
        self.vjp_rows += int(rows.shape[0])
        self.jvp_rows += int(rows.shape[0])
        return np.asarray(fused, dtype=np.float64)

    def costs(self) -> dict[str, int | str]:
        """JSON-ready cost diagnostics, with the gradient source whose accuracy bounds every claim.

        With finite differences the operator is only as linear as the differencing (jvp and the
        dense Jacobian behind vjp differ by ~1e-4 on smooth models, up to ~1e-2 across ReLU kinks);
        residuals and intervals are about that operator, not about the exact derivatives.
        """
        return {
            "jvp_rows": self.jvp_rows,
            "vjp_rows": self.vjp_rows,
            "gradient_source": str(self.problem.jacobian.name),
        }


class FisherOperator(LinearOperator):
    """F = J^T C J on input space (d x d, float64), applied matrix-free.

    ``matmat`` sends all columns through one batched jvp and one batched vjp, so randomised
    estimators pay one model call per block rather than per vector.
    """

    def __init__(self, problem: SampleProblem, meter: CostMeter | None = None) -> None:
        self.problem = problem
        self.meter = meter or CostMeter(problem)
        self.covariance = SoftmaxCovariance(problem.logits)
        size = problem.input_size
        super().__init__(dtype=np.dtype(np.float64), shape=(size, size))

    def _matmat(self, block: np.ndarray) -> np.ndarray:
        columns = np.asarray(block, dtype=np.float64).reshape(self.shape[1], -1)
        self.meter.matvecs += columns.shape[1]
        projected = self.covariance.apply(self.meter.jvp(columns.T))  # rows (J v)^T C; C symmetric
        return self.meter.vjp(projected).T

    def _matvec(self, vector: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(vector).reshape(-1, 1)).reshape(-1)

    def _adjoint(self) -> FisherOperator:
        return self  # F is symmetric

    def quadratic_forms(self, block: np.ndarray) -> np.ndarray:
        """v^T F v for each column v of ``block`` [d, M] from J v alone (no vjp): (Jv)^T C (Jv).

        Counted as one product per column: it is what Hutchinson needs of a matvec, at the price
        of a jvp only.
        """
        columns = np.asarray(block, dtype=np.float64).reshape(self.shape[1], -1)
        self.meter.matvecs += columns.shape[1]
        images = self.meter.jvp(columns.T)
        return self.covariance.quadratic(images)


class FisherGramOperator(LinearOperator):
    """B = A J J^T A^T (K x K, float64, C = A^T A): the same non-zero spectrum as F, matrix-free."""

    def __init__(self, problem: SampleProblem, meter: CostMeter | None = None) -> None:
        self.problem = problem
        self.meter = meter or CostMeter(problem)
        self.covariance = SoftmaxCovariance(problem.logits)
        size = problem.num_classes
        super().__init__(dtype=np.dtype(np.float64), shape=(size, size))

    def _matmat(self, block: np.ndarray) -> np.ndarray:
        columns = np.asarray(block, dtype=np.float64).reshape(self.shape[1], -1)
        self.meter.matvecs += columns.shape[1]
        images = self.meter.gram(self.covariance.factor_transpose(columns.T))  # rows J J^T A^T w, [M, K]
        return self.covariance.factor(images).T

    def _matvec(self, vector: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(vector).reshape(-1, 1)).reshape(-1)

    def _adjoint(self) -> FisherGramOperator:
        return self

    def lift(self, vector: np.ndarray) -> np.ndarray:
        """F's eigenvector J^T A^T u / ||.|| in input space for a K-side eigenvector u (one vjp)."""
        direction = self.meter.vjp(
            self.covariance.factor_transpose(np.asarray(vector, dtype=np.float64).reshape(1, -1))
        )[0]
        # The norm by einsum, not BLAS: right after an ONNX Runtime run the shared pool's threads
        # still spin, and OpenBLAS's threaded dot then waits for the cores (150528 entries: 6.6 ms
        # median against 0.05 ms; numpy's norm calls that dot now and then).
        norm = float(np.sqrt(np.einsum("i,i->", direction, direction)))
        return direction / norm if norm > 0 else direction


def choose_side(problem: SampleProblem, side: str) -> str:
    """Resolve ``side`` ("auto", "gram" or "input"): auto takes the smaller dimension."""
    if side == "auto":
        return "gram" if problem.num_classes <= problem.input_size else "input"
    if side not in ("gram", "input"):
        raise InputError(f"unknown operator side {side!r}; choose auto, gram or input")
    return side


def make_operator(problem: SampleProblem, side: str, meter: CostMeter) -> FisherOperator | FisherGramOperator:
    """The Fisher operator on the chosen side, charging ``meter``."""
    if choose_side(problem, side) == "gram":
        return FisherGramOperator(problem, meter)
    return FisherOperator(problem, meter)


def fisher_rank_bound(problem: SampleProblem) -> int:
    """rank(F) <= min(K - 1, d): C has the constant vector in its null space."""
    return max(1, min(problem.num_classes - 1, problem.input_size))


def resolve_budget(method: str, budget: int | None, default: int, minimum: int, unit: str) -> int:
    """The budget to use: ``default`` when None; an InputError (one line) when unusable."""
    if budget is None:
        return default
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise InputError(f"{method}: --budget must be a whole number of {unit}, got {budget!r}")
    if budget <= 0:
        raise InputError(f"{method}: --budget must be positive, got {budget}")
    if budget < minimum:
        raise InputError(f"{method}: --budget {budget} is too small to mean anything; give at least {minimum} {unit}")
    return int(budget)
