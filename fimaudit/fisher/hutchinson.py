"""The ``hutchinson`` method: trace(F) by Hutchinson and Hutch++, and the bound it gives.

A genuine trace estimator, not the paper code's maximum of random Rayleigh quotients:

- Hutchinson: trace(A) = E[v^T A v] for Rademacher v; the mean over probes, with a Student-t
  interval from their spread. On F each probe needs J v only: v^T F v = (J v)^T C (J v).
- Hutch++ (Meyer, Musco, Musco, Williams 2021): a third of the budget sketches range(A) as
  Q = orth(A S); trace(Q^T A Q) is taken exactly and Hutchinson runs on the deflated rest
  (I - QQ^T) A (I - QQ^T). F has rank <= K - 1, so once the sketch has K - 1 columns the rest is
  numerically zero and the trace is exact up to rounding.

What is reported for lambda_max: trace(F) / rank(F) <= lambda_max(F), with rank(F) <= min(K-1, d).
The trace is itself estimated, so the value reported is the *lower end* of the trace's 95%
interval divided by the rank bound: a lower bound with (about) 97.5% one-sided confidence, kind
"lower_bound". The trace estimate and its interval are in ``trace`` and the diagnostics.

Budget: operator products (a Hutchinson probe counts as one, though it costs a jvp only); default 60.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from fimaudit.errors import InputError
from fimaudit.fisher.operator import CostMeter, FisherOperator, fisher_rank_bound, resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult

DEFAULT_MATVECS = 60
CONFIDENCE = 0.95
VARIANTS = ("hutch++", "hutchinson")
_MINIMUM = {"hutchinson": 2, "hutch++": 6}

QuadraticForms = Callable[[np.ndarray], np.ndarray]


@dataclass
class TraceEstimate:
    """A trace estimate with a two-sided ``confidence`` interval (t-interval over probes)."""

    value: float
    interval: tuple[float, float]
    standard_error: float
    probes: int
    sketch_size: int
    variant: str


def rademacher(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Random signs [size, count] (float64): the lowest-variance Hutchinson probes for real A."""
    return rng.integers(0, 2, size=(size, count)).astype(np.float64) * 2.0 - 1.0


def quadratic_forms_of(operator: LinearOperator) -> QuadraticForms:
    """v^T A v per column, by ``operator.quadratic_forms`` when it has a cheaper one."""
    special = getattr(operator, "quadratic_forms", None)
    if special is not None:
        return special
    return lambda block: np.einsum("ij,ij->j", block, operator.matmat(block))


def _mean_interval(
    samples: np.ndarray, offset: float, scale: float, confidence: float
) -> tuple[float, tuple[float, float], float]:
    """Offset + scale * mean(samples), with a Student-t interval."""
    from scipy import stats  # lazily: scipy.stats costs ~1.2 s at every CLI start
    count = samples.size
    mean = float(samples.mean())
    error = float(samples.std(ddof=1) / np.sqrt(count)) if count > 1 else float("inf")
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=max(count - 1, 1))) * error
    value = offset + scale * mean
    return value, (value - scale * half, value + scale * half), scale * error


def hutchinson_trace(
    operator: LinearOperator, num_matvecs: int, rng: np.random.Generator, confidence: float = CONFIDENCE
) -> TraceEstimate:
    """Plain Hutchinson with ``num_matvecs`` Rademacher probes."""
    if num_matvecs < _MINIMUM["hutchinson"]:
        raise InputError(
            f"hutchinson needs at least {_MINIMUM['hutchinson']} probes for an interval, got {num_matvecs}"
        )
    probes = rademacher(rng, operator.shape[0], num_matvecs)
    samples = np.asarray(quadratic_forms_of(operator)(probes), dtype=np.float64)
    value, interval, error = _mean_interval(samples, 0.0, 1.0, confidence)
    return TraceEstimate(value, interval, error, num_matvecs, 0, "hutchinson")


def hutch_plus_plus_trace(
    operator: LinearOperator, num_matvecs: int, rng: np.random.Generator, confidence: float = CONFIDENCE
) -> TraceEstimate:
    """Hutch++ with a third of ``num_matvecs`` for the sketch, a third for Q^T A Q, the rest for probes."""
    if num_matvecs < _MINIMUM["hutch++"]:
        raise InputError(f"hutch++ needs at least {_MINIMUM['hutch++']} products, got {num_matvecs}")
    size = operator.shape[0]
    sketch_size = min(num_matvecs // 3, size)
    probes = num_matvecs - 2 * sketch_size
    forms = quadratic_forms_of(operator)
    sketch = np.asarray(operator.matmat(rademacher(rng, size, sketch_size)), dtype=np.float64)
    basis, _ = np.linalg.qr(sketch)
    low_rank = float(np.sum(forms(basis)))
    if probes < 2 or sketch_size == size:
        # The sketch spans the whole space: the low-rank part is the trace.
        return TraceEstimate(low_rank, (low_rank, low_rank), 0.0, 0, sketch_size, "hutch++")
    residual_probes = rademacher(rng, size, probes)
    residual_probes -= basis @ (basis.T @ residual_probes)
    samples = np.asarray(forms(residual_probes), dtype=np.float64)
    value, interval, error = _mean_interval(samples, low_rank, 1.0, confidence)
    return TraceEstimate(value, interval, error, probes, sketch_size, "hutch++")


def hutchinson_result(
    problem: SampleProblem,
    num_matvecs: int | None,
    rng: np.random.Generator,
    variant: str = "hutch++",
) -> SpectralResult:
    """trace(F) by ``variant`` within ``num_matvecs`` products (None: 60), and lambda_max >= trace / rank.

    The ratio is taken at the lower end of the trace's interval: a lower bound on lambda_max with
    about 97.5% one-sided confidence.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown trace estimator {variant!r}; choose {' or '.join(VARIANTS)}")
    matvecs = resolve_budget("hutchinson", num_matvecs, DEFAULT_MATVECS, _MINIMUM[variant], "operator products")
    meter = CostMeter(problem)
    operator = FisherOperator(problem, meter)
    if variant == "hutch++":
        trace = hutch_plus_plus_trace(operator, matvecs, rng)
    else:
        trace = hutchinson_trace(operator, matvecs, rng)
    rank = fisher_rank_bound(problem)
    lower = max(trace.interval[0], 0.0) / rank
    diagnostics = {
        "method": "hutchinson",
        "trace_method": trace.variant,
        "trace_estimate": trace.value,
        "trace_interval": [trace.interval[0], trace.interval[1]],
        "trace_confidence": CONFIDENCE,
        "trace_standard_error": trace.standard_error,
        "probes": trace.probes,
        "sketch_size": trace.sketch_size,
        "rank_bound": rank,
        "bound_basis": (
            "lambda_max >= trace / rank; reported with the lower end of the trace's 95% interval, "
            "so it is a lower bound with about 97.5% one-sided confidence"
        ),
    }
    diagnostics.update(meter.costs())
    return SpectralResult(
        value=lower,
        kind="lower_bound",
        trace=trace.value,
        matvecs=meter.matvecs,
        model_evaluations=meter.model_evaluations,
        seconds=meter.seconds,
        diagnostics=diagnostics,
    )


@estimator("hutchinson")
def hutchinson(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Hutch++ trace of F and the lower bound trace / rank; ``budget`` = operator products (default 60)."""
    return hutchinson_result(problem, budget, rng)
