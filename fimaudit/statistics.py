"""Statistics of per-sample lambda_max: the one list of them, and the one way to compute them.

A threshold gates one statistic (``--statistic``), models are ranked by one (``compare
--statistic``), and every report shows them all; each of those reads :data:`STATISTICS` and calls
:func:`statistic` here, so the gate, the ranking and the tables can never disagree on what
"p95" means (numpy's default, linear percentile).

Every statistic here is monotone in each sample's value, so applying it to the samples' lowest
possible values and to their highest possible values brackets the true statistic
(:func:`bracket`); the verdict (fimaudit/verdict.py) gates on that bracket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np

Statistic = Literal["max", "p95", "mean", "median"]
#: The statistics a threshold can gate and models can be ranked by.
STATISTICS: tuple[Statistic, ...] = get_args(Statistic)
#: How reports name each field of a summary, in the order they show them.
DISPLAY_NAMES: dict[str, str] = {
    "count": "Samples",
    "min": "Minimum",
    "median": "Median",
    "mean": "Mean",
    "p95": "95th percentile",
    "max": "Maximum",
    "std": "Standard deviation",
}

# Stands in for "no upper limit" while computing percentiles (inf would make interpolation NaN).
_UNBOUNDED = 1e300
_UNBOUNDED_CUTOFF = 1e290


def statistic(values: np.ndarray, name: str) -> float:
    """The statistic ``name`` of ``values`` (raises ValueError for a name not in STATISTICS)."""
    if name == "max":
        return float(values.max())
    if name == "mean":
        return float(values.mean())
    if name == "median":
        return float(np.median(values))
    if name == "p95":
        return float(np.percentile(values, 95))
    raise ValueError(f"unknown statistic {name!r}; choose from {', '.join(STATISTICS)}")


@dataclass(frozen=True)
class Summary:
    """The statistics of per-sample lambda_max over the audited samples (at least one)."""

    count: int
    max: float
    mean: float
    median: float
    p95: float
    min: float
    std: float

    def __getitem__(self, name: str) -> float:
        """The statistic ``name`` (one of STATISTICS, or count/min/std)."""
        if name not in DISPLAY_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def to_dict(self) -> dict[str, float | int | None]:
        """The statistics by name, as the JSON report writes them."""
        return asdict(self)


def summarise(values: np.ndarray) -> Summary:
    """Every statistic of ``values`` (one per sample; at least one)."""
    values = np.asarray(values, dtype=np.float64)
    return Summary(
        count=int(values.size),
        max=statistic(values, "max"),
        mean=statistic(values, "mean"),
        median=statistic(values, "median"),
        p95=statistic(values, "p95"),
        min=float(values.min()),
        std=float(values.std()),
    )


def summary_dict(values: np.ndarray) -> dict[str, float | int | None]:
    """:func:`summarise` as JSON-ready data; with no values, a count of 0 and every statistic None."""
    if np.asarray(values).size == 0:
        return {"count": 0, **{name: None for name in DISPLAY_NAMES if name != "count"}}
    return summarise(values).to_dict()


def bracket(lows: np.ndarray, highs: np.ndarray, name: str) -> tuple[float, float | None]:
    """(lowest, highest) possible value of statistic ``name``, each sample's truth in [lows[i], highs[i]].

    ``highs`` may be inf; highest is None when it has no upper limit.
    """
    lows = np.asarray(lows, dtype=np.float64)
    highs = np.asarray(highs, dtype=np.float64)
    high = statistic(np.where(np.isinf(highs), _UNBOUNDED, highs), name)
    return statistic(lows, name), (None if high >= _UNBOUNDED_CUTOFF else high)
