"""Sanity checks that make a report trustworthy: the gradients agree with finite differences.

When an audit uses gradient graphs, a few samples are differentiated both ways along random
directions: the graph's J v against central differences of the logits along v. Random
directions cost two model evaluations each (a dense finite-difference Jacobian costs 2 d), and
a wrong gradient rule shows in almost every direction. Finite differences are noisy: in float32,
and wherever a step crosses ReLU or max-pool kinks, a direction can be off by several percent
(measured on the sample CNNs: per-direction errors up to 12%, per-sample medians up to 2.3%). So
each sample's error is the *median* over directions of the per-direction relative error, against a
tolerance of 5%; a rule with a real bug is off by O(1) in most directions, far above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fimaudit.jacobian import InputJacobian

#: Median relative error of the directional derivatives above which the check fails.
GRADIENT_CHECK_TOLERANCE = 5e-2
#: Random directions per checked sample.
GRADIENT_CHECK_DIRECTIONS = 16


@dataclass
class GradientCheck:
    """Graph directional derivatives against finite differences on the first few samples."""

    samples: list[int]
    relative_errors: list[float]
    directions: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return max(self.relative_errors, default=0.0) <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "directions_per_sample": self.directions,
            "relative_errors": self.relative_errors,
            "max_relative_error": max(self.relative_errors, default=0.0),
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


def gradient_check(
    checked: InputJacobian,
    reference: InputJacobian,
    inputs: np.ndarray,
    count: int = 3,
    directions: int = GRADIENT_CHECK_DIRECTIONS,
    tolerance: float = GRADIENT_CHECK_TOLERANCE,
    seed: int = 0,
) -> GradientCheck:
    """Compare ``checked`` and ``reference`` J v along random unit directions on ``count`` samples.

    For each sample the error is the median over directions v of
    ||J_checked v - J_reference v|| / ||J_reference v||.
    """
    rng = np.random.default_rng(seed)
    errors = []
    chosen = inputs[:count]
    for sample in chosen:
        tangents = rng.standard_normal((directions, sample.size))
        tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
        ours = checked.jvp(sample, tangents)
        theirs = reference.jvp(sample, tangents)
        norms = np.linalg.norm(theirs, axis=1)
        differences = np.linalg.norm(ours - theirs, axis=1)
        per_direction = np.where(norms > 0, differences / np.where(norms > 0, norms, 1.0), differences)
        errors.append(float(np.median(per_direction)))
    return GradientCheck(list(range(chosen.shape[0])), errors, directions, tolerance)
