"""Input Jacobians of the logits: the interface every gradient source implements.

A source answers three questions about the logits z(x) of one model, for samples x of the
chosen input: the dense Jacobian (K x d per sample), Jacobian-vector products J v (forward mode)
and vector-Jacobian products J^T u (reverse mode). Estimators only use this interface, so they
work the same on finite differences and on gradient graphs derived from the ONNX graph.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fimaudit.runtime import RunAccounting


class InputJacobian(Protocol):
    """Logits and their derivatives with respect to the chosen input."""

    #: "fd" for finite differences, "graph" for gradient graphs.
    name: str
    #: Number of logits K.
    num_classes: int
    #: Flattened size d of one sample.
    input_size: int
    #: Model evaluations paid so far (rows through ONNX Runtime, all graphs together).
    accounting: RunAccounting

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits [N, K] for samples [N, ...]."""

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """The Jacobians [N, K, d] (float64) for samples [N, ...]."""

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """J v for one sample [...] and tangents [M, d]: returns [M, K] (float64)."""

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """J^T u for one sample [...] and cotangents [M, K]: returns [M, d] (float64)."""
