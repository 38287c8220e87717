"""The softmax covariance C = diag(p) - p p^T, computed from logits without cancellation.

Why not from probabilities: for a confident prediction p_max = 1 - 1e-5, float32 p holds
1 - p_max to one or two digits, and C's largest entries p_k (1 - p_k) inherit that error.
Working in float64 from the logits, 1 - p_k is summed from the other probabilities directly
(sum_{j != k} p_j), so every entry of C is accurate to float64 rounding.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p in float64 along the last axis, shifted by the maximum (no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """p = softmax(logits) in float64."""
    return np.exp(log_softmax(logits))


def complement_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """1 - p_k for every k, as the sum of the other probabilities (no cancellation near p_k = 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    total_without = p.sum(axis=-1, keepdims=True) - p
    # The subtraction above cancels for the dominant class; recompute it from the others.
    top = np.argmax(p, axis=-1)
    others = p.copy()
    np.put_along_axis(others, top[..., None], 0.0, axis=-1)
    np.put_along_axis(total_without, top[..., None], others.sum(axis=-1, keepdims=True), axis=-1)
    return total_without


def softmax_covariance(logits: np.ndarray) -> np.ndarray:
    """C = diag(p) - p p^T for one logits vector [K], float64, diagonal p_k (1 - p_k) exact."""
    p = softmax(logits)
    covariance = -np.outer(p, p)
    np.fill_diagonal(covariance, p * complement_probabilities(p))
    return covariance


def covariance_sqrt(covariance: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root C^{1/2} (tiny negative eigenvalues from rounding clipped)."""
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def covariance_norm_bound(logits: np.ndarray) -> float:
    """||C|| <= min(1/2, 1 - sum p_k^2): the per-sample factor of the Fisher bounds."""
    p = softmax(logits)
    gini = float(np.sum(p * complement_probabilities(p)))
    return min(0.5, gini)
