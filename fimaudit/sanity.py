"""Sanity checks that make a report trustworthy: the gradients agree with finite differences.

When an audit uses gradient graphs, a few samples are differentiated both ways along random
directions: the graph's J v against central differences of the logits along v. Random
directions cost two model evaluations each (a dense finite-difference Jacobian costs 2 d), and
a wrong gradient rule shows in almost every direction. Finite differences are noisy: in float32,
and wherever a step crosses ReLU or max-pool kinks, a direction can be off by several percent, and
which step is best depends on the model (random-init DenseNet-121 at 3x32x32: per-sample median
errors of 5-7% at a step of 1e-3, 2-4% at 3e-4; ResNet-18: best at 1e-3). So differences are taken
at a few steps, each direction keeps its smallest error (a correct gradient agrees with finite
differences at some step, a wrong one at none), and each sample's error is the *median* over
directions, against a tolerance of 5%; a rule with a real bug is off by O(1) in most directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fimaudit.jacobian import InputJacobian

#: Median relative error of the directional derivatives above which the check fails.
GRADIENT_CHECK_TOLERANCE = 5e-2
#: Finite-difference steps of the check, relative to the default step.
GRADIENT_CHECK_STEP_FACTORS = (1.0, 1.0 / 3.0, 1.0 / 10.0)
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
    references: Sequence[InputJacobian],
    inputs: np.ndarray,
    count: int = 3,
    directions: int = GRADIENT_CHECK_DIRECTIONS,
    tolerance: float = GRADIENT_CHECK_TOLERANCE,
    seed: int = 0,
) -> GradientCheck:
    """Compare ``checked`` with ``references`` (J v) along random unit directions on ``count`` samples.

    For each sample the error is the median over directions v of
    min over references r of ||J_checked v - J_r v|| / ||J_r v||.
    """
    rng = np.random.default_rng(seed)
    errors = []
    chosen = inputs[:count]
    for sample in chosen:
        tangents = rng.standard_normal((directions, sample.size))
        tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
        ours = checked.jvp(sample, tangents)
        per_reference = []
        for reference in references:
            theirs = reference.jvp(sample, tangents)
            norms = np.linalg.norm(theirs, axis=1)
            differences = np.linalg.norm(ours - theirs, axis=1)
            per_reference.append(np.where(norms > 0, differences / np.where(norms > 0, norms, 1.0), differences))
        errors.append(float(np.median(np.min(per_reference, axis=0))))
    return GradientCheck(list(range(chosen.shape[0])), errors, directions, tolerance)
