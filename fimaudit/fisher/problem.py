"""One sample's Fisher problem: what every estimator receives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fimaudit.fisher.covariance import softmax, softmax_covariance
from fimaudit.gradients.base import InputJacobian


@dataclass
class SampleProblem:
    """F(x) for one sample x: its logits, and a gradient source for J v and J^T u."""

    sample: np.ndarray
    logits: np.ndarray
    jacobian: InputJacobian

    @property
    def num_classes(self) -> int:
        """The number of classes K."""
        return int(self.logits.shape[-1])

    @property
    def input_size(self) -> int:
        """The flattened size d of the sample."""
        return int(self.sample.size)

    @property
    def probabilities(self) -> np.ndarray:
        """softmax(logits) in float64."""
        return softmax(self.logits)

    @property
    def covariance(self) -> np.ndarray:
        """The K x K softmax covariance diag(p) - p p^T (float64)."""
        return softmax_covariance(self.logits)
