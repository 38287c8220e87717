"""Does lambda_max rank samples like the attack does? Spearman rho and Kendall tau with bootstrap intervals.

The pairs are (lambda_max, 1 / epsilon_min) over the samples with a verified adversarial example
(samples without one are counted, not paired: their epsilon_min is unknown, not infinite). Each
coefficient gets a percentile bootstrap 95% interval from ``resamples`` resamples of the pairs
drawn with ``rng``; resamples in which a coefficient is undefined (all ranks tied) are dropped and
counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from fimaudit.results import RankCorrelation


def _coefficients(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan"), float("nan")
    return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def rank_correlation(
    lambda_max: Sequence[float],
    epsilon_min: Sequence[float | None],
    rng: np.random.Generator,
    resamples: int = 2000,
    confidence: float = 0.95,
) -> RankCorrelation:
    """Spearman rho and Kendall tau of lambda_max against 1 / epsilon_min, each with a bootstrap interval."""
    if len(lambda_max) != len(epsilon_min):
        raise ValueError("lambda_max and epsilon_min need one value per sample each")
    paired = [(lam, 1.0 / eps) for lam, eps in zip(lambda_max, epsilon_min, strict=True) if eps is not None and eps > 0]
    unpaired = len(lambda_max) - len(paired)
    if len(paired) < 3:
        return RankCorrelation(len(paired), unpaired, None, None, None, None, 0, 0, confidence)
    x, y = (np.array(column, dtype=np.float64) for column in zip(*paired, strict=True))
    rho, tau = _coefficients(x, y)
    boots = []
    for _ in range(resamples):
        pick = rng.integers(0, x.size, x.size)
        boots.append(_coefficients(x[pick], y[pick]))
    table = np.array(boots)
    kept = table[np.isfinite(table).all(axis=1)]
    tail = 100 * (1 - confidence) / 2
    intervals: list[tuple[float, float] | None] = [None, None]
    if kept.shape[0]:
        for column in (0, 1):
            low, high = np.percentile(kept[:, column], [tail, 100 - tail])
            intervals[column] = (float(low), float(high))
    return RankCorrelation(
        count=x.size,
        unpaired=unpaired,
        spearman=_finite_or_none(rho),
        kendall=_finite_or_none(tau),
        spearman_interval=intervals[0],
        kendall_interval=intervals[1],
        resamples=resamples,
        dropped_resamples=resamples - kept.shape[0],
        confidence=confidence,
    )
