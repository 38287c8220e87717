"""Sanity checks that make a report trustworthy: the gradients agree with finite differences.

When an audit uses gradient graphs, a few samples are differentiated both ways. Finite
differences are noisy (float32, kinks), so the check uses a tolerance on the relative Frobenius
error of the Jacobian; a graph rule with a real bug is off by O(1), far above that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.jacobian import InputJacobian

#: Relative Frobenius error of J (graph vs finite differences) above which the check fails.
GRADIENT_CHECK_TOLERANCE = 2e-2


@dataclass
class GradientCheck:
    """Graph gradients against finite differences on the first few samples."""

    samples: list[int]
    jacobian_relative_errors: list[float]
    lambda_max_relative_errors: list[float]
    tolerance: float

    @property
    def passed(self) -> bool:
        return max(self.jacobian_relative_errors, default=0.0) <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "jacobian_relative_errors": self.jacobian_relative_errors,
            "lambda_max_relative_errors": self.lambda_max_relative_errors,
            "max_jacobian_relative_error": max(self.jacobian_relative_errors, default=0.0),
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


def _relative(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def gradient_check(
    checked: InputJacobian,
    reference: InputJacobian,
    inputs: np.ndarray,
    count: int = 3,
    tolerance: float = GRADIENT_CHECK_TOLERANCE,
) -> GradientCheck:
    """Compare the dense Jacobians of ``checked`` and ``reference`` on the first ``count`` samples."""
    chosen = inputs[:count]
    ours = checked.dense(chosen)
    theirs = reference.dense(chosen)
    logits = reference.logits(chosen)
    jac_errors, lam_errors = [], []
    for i in range(chosen.shape[0]):
        norm = float(np.linalg.norm(theirs[i]))
        jac_errors.append(0.0 if norm == 0 else float(np.linalg.norm(ours[i] - theirs[i]) / norm))
        ours_lam = exact_lambda_max(ours[i], logits[i], with_eigenvector=False).value
        theirs_lam = exact_lambda_max(theirs[i], logits[i], with_eigenvector=False).value
        lam_errors.append(_relative(ours_lam, theirs_lam))
    return GradientCheck(list(range(chosen.shape[0])), jac_errors, lam_errors, tolerance)
