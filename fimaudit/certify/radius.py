"""The certified radius: the largest eps (to a stated relative tolerance) with B(x, eps) <= T.

What is certified is the returned eps itself: B(x, eps) <= T was computed there, and every smaller
ball is inside it, so lambda_max(F(x')) <= T for every x' within that eps — whether or not B is
monotone in eps (it is, in exact arithmetic: every rule is inclusion-monotone). The search
doubles eps from a starting guess until B exceeds T, then bisects geometrically until the
bracket's ratio is within 1 + ``tolerance``: the true largest eps (for this B) lies below
eps * (1 + tolerance) unless the search stopped at ``ceiling``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from fimaudit.certify.certifier import Certifier

DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class CertifiedRadius:
    """The radius found, B there, and how the search ended."""

    epsilon: float
    value: float  # B(x, epsilon) (<= threshold), or B(x, 0) when epsilon is 0
    tolerance: float
    evaluations: int
    seconds: float
    capped: bool  # the search reached its ceiling: the radius is at least epsilon


def certified_radius(certifier: Certifier, sample: np.ndarray, threshold: float, norm: str = "2",
                     tolerance: float = DEFAULT_TOLERANCE, start: float | None = None,
                     ceiling: float | None = None) -> CertifiedRadius:
    """The largest certified eps for ``threshold`` (0 when even B(x, 0) > threshold)."""
    started = time.perf_counter()
    scale = float(np.linalg.norm(np.asarray(sample, dtype=np.float64))) or 1.0
    start = start or 1e-3 * scale
    ceiling = ceiling or 1e3 * scale
    evaluations = 1
    at_point = certifier.bound(sample, 0.0, norm).value
    if not at_point <= threshold:
        return CertifiedRadius(0.0, at_point, tolerance, evaluations, time.perf_counter() - started, False)
    low, low_value, high = 0.0, at_point, start
    while True:  # find a bracket: B(low) <= T < B(high)
        value = certifier.bound(sample, high, norm).value
        evaluations += 1
        if value <= threshold:
            low, low_value = high, value
            if high >= ceiling:
                return CertifiedRadius(low, low_value, tolerance, evaluations, time.perf_counter() - started, True)
            high = min(high * 4.0, ceiling)
            continue
        if low > 0.0 or high < 1e-12 * scale:
            break
        high /= 16.0
    if low == 0.0:
        return CertifiedRadius(0.0, at_point, tolerance, evaluations, time.perf_counter() - started, False)
    while high > low * (1.0 + tolerance):
        middle = math.sqrt(low * high)
        value = certifier.bound(sample, middle, norm).value
        evaluations += 1
        if value <= threshold:
            low, low_value = middle, value
        else:
            high = middle
    return CertifiedRadius(low, low_value, tolerance, evaluations, time.perf_counter() - started, False)
