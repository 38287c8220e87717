"""Does lambda_max rank samples like the attack does? Spearman rho and Kendall tau with bootstrap intervals.

The pairs are (lambda_max, 1 / epsilon_min) over the samples with a verified adversarial example
(samples without one are counted, not paired: their epsilon_min is unknown, not infinite). Each
coefficient gets a percentile bootstrap 95% interval from ``resamples`` resamples of the pairs
drawn with ``rng``; resamples in which a coefficient is undefined (all ranks tied) are dropped and
counted.

The resamples are computed together (``bootstrap_coefficients``): Spearman as the Pearson
correlation of average ranks, Kendall's tau-b from the pairwise sign products, both in numpy over a
block of resamples at once. One scipy call per resample took 38 of the 44 seconds of an 8-sample
audit with the attacks (2000 resamples, overall and per class); the vectorised form agrees with
scipy to rounding (tests/attacks/test_correlation.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fimaudit.results import RankCorrelation


def _coefficients(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy import stats  # lazily: scipy.stats costs ~1.2 s at every CLI start
    if np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan"), float("nan")
    return float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)


#: Largest n x n x resamples block of sign products held at once (elements).
BLOCK_ELEMENTS = 4_000_000


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair of ``x``, ``y`` [R, n] (average ranks for ties); NaN where a row is constant."""
    from scipy import stats  # lazily: scipy.stats costs ~1.2 s at every CLI start
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


#: Beyond this many pairs per resample, Kendall runs per row in scipy (O(n log n), not O(n^2)).
PAIRWISE_LIMIT = 300


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of ``x``, ``y`` [R, n]; NaN where a row is constant."""
    from scipy import stats  # lazily: scipy.stats costs ~1.2 s at every CLI start
    n = x.shape[1]
    if n > PAIRWISE_LIMIT:
        return np.array([stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)], dtype=np.float64)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    out = np.empty(x.shape[0])
    step = max(1, BLOCK_ELEMENTS // max(n * n, 1))
    for start in range(0, x.shape[0], step):
        xs, ys = x[start : start + step], y[start : start + step]
        sx = np.sign(xs[:, :, None] - xs[:, None, :])[:, upper]
        sy = np.sign(ys[:, :, None] - ys[:, None, :])[:, upper]
        untied_x, untied_y = np.count_nonzero(sx, axis=1), np.count_nonzero(sy, axis=1)
        denominator = np.sqrt(untied_x.astype(np.float64) * untied_y)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + step] = np.where(denominator > 0, (sx * sy).sum(axis=1) / denominator, np.nan)
    return out


def bootstrap_coefficients(x: np.ndarray, y: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """[R, 2] Spearman and Kendall of the resamples ``picks`` [R, n] (indices into ``x``, ``y``); NaN if undefined."""
    return np.stack([_spearman_rows(x[picks], y[picks]), _kendall_rows(x[picks], y[picks])], axis=1)


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
    table = bootstrap_coefficients(x, y, rng.integers(0, x.size, (resamples, x.size)))
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
