"""The softmax covariance C = diag(p) - p p^T, computed from logits without cancellation.

Why not from probabilities: for a confident prediction p_max = 1 - 1e-5, float32 p holds
1 - p_max to one or two digits, and C's largest entries p_k (1 - p_k) inherit that error.
Working in float64 from the logits, 1 - p_k is summed from the other probabilities directly
(sum_{j != k} p_j), so every entry of C is accurate to float64 rounding.

Products with C and its factor (``SoftmaxCovariance``). Entries of C accurate to float64 are not
enough once C meets a Jacobian: C J sums rows of J with weights that add to zero, so a component
that all class gradients share (g_k = a + b_k, common in real networks) must cancel, and in
R (J J^T) R with R = C^{1/2} from an eigen-decomposition it does not: R 1 = 0 holds only to
sqrt(eps) ||R|| (clipping the eigenvalue at zero), and the leak grows with (|a| / |b|)^2.
Measured with a random J, top probability 1 - 1e-12 and |a| / |b| = 1e6: lambda_max 1.3e-4 and
trace(F) 3e-4 relative off. So every product here works with *deviations from the mean row*,
never forming the cancelling sums: with r the most probable class and D_k = y_k - y_r,

    y_k - p^T y = D_k - sum_{i != r} p_i D_i,

in which p_r (= 1 - 1e-16 is 1.0 in float64) never appears, and the shared component cancels
exactly in D_k. C = A^T A with the (non-symmetric) factor A = diag(sqrt p) (I - 1 p^T), so
F = J^T C J = (A J)^T (A J): the rows of A J are sqrt(p_k) (g_k - g_bar), and the K x K matrix
A J J^T A^T has F's non-zero spectrum without any square root of C being computed.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log p in float64 along the last axis, shifted by the maximum (no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """The softmax probabilities of ``logits`` in float64, through ``log_softmax`` (no overflow)."""
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
    """The symmetric PSD square root C^{1/2} (tiny negative eigenvalues from rounding clipped).

    Accurate to sqrt(eps) ||C^{1/2}|| only along C's null vector 1 (see the module doc): for
    products with Jacobians use ``SoftmaxCovariance``, which never takes this root.
    """
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def covariance_norm_bound(logits: np.ndarray) -> float:
    """||C|| <= min(1/2, 1 - sum p_k^2): the per-sample factor of the Fisher bounds."""
    p = softmax(logits)
    gini = float(np.sum(p * complement_probabilities(p)))
    return min(0.5, gini)


class SoftmaxCovariance:
    """C = diag(p) - p p^T of one logits vector [K], applied through its structure in float64.

    Every method takes values per class in the *last* axis (rows of J v, cotangents, or J^T as
    [d, K]) and works with deviations from the reference class r = argmax p (module doc), so the
    results are accurate to float64 rounding of the deviations, whatever the inputs share.
    """

    def __init__(self, logits: np.ndarray) -> None:
        log_p = log_softmax(np.asarray(logits, dtype=np.float64).reshape(-1))
        self.probabilities = np.exp(log_p)
        self.sqrt_probabilities = np.exp(0.5 * log_p)
        self.reference = int(np.argmax(log_p))
        others = self.probabilities.copy()
        others[self.reference] = 0.0
        #: p_i for i != r and 0 at r: the weights of the deviations (p_r never multiplies them).
        self.other_probabilities = others
        #: 1 - p_r, summed from the other classes (not representable as 1 - p_r near p_r = 1).
        self.complement = float(others.sum())

    @property
    def num_classes(self) -> int:
        """The number of classes K."""
        return int(self.probabilities.size)

    def deviations(self, values: np.ndarray) -> np.ndarray:
        """y_k - p^T y along the last axis, as D_k - sum_{i != r} p_i D_i with D_k = y_k - y_r."""
        y = np.asarray(values, dtype=np.float64)
        differences = y - y[..., self.reference : self.reference + 1]
        return differences - (differences @ self.other_probabilities)[..., None]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """C y = p * (y - p^T y) along the last axis (C is symmetric: also y^T C)."""
        return self.probabilities * self.deviations(values)

    def factor(self, values: np.ndarray) -> np.ndarray:
        """A y = sqrt(p) * (y - p^T y): A^T A = C, so |A y|^2 = y^T C y."""
        return self.sqrt_probabilities * self.deviations(values)

    def factor_transpose(self, values: np.ndarray) -> np.ndarray:
        """A^T w = u - p sum(u) with u = sqrt(p) * w, along the last axis; its entries sum to zero.

        The reference entry u_r (1 - p_r) - p_r sum_{i != r} u_i uses the complement summed from
        the other classes, never 1 - p_r.
        """
        u = self.sqrt_probabilities * np.asarray(values, dtype=np.float64)
        r = self.reference
        others = u.copy()
        others[..., r] = 0.0
        rest = others.sum(axis=-1)  # sum_{i != r} u_i, summed directly (no cancellation against u_r)
        total = u.sum(axis=-1)
        result = u - self.probabilities * total[..., None]
        result[..., r] = u[..., r] * self.complement - self.probabilities[r] * rest
        return result

    def quadratic(self, values: np.ndarray) -> np.ndarray:
        """y^T C y = sum_k p_k (y_k - p^T y)^2 along the last axis (>= 0 by construction)."""
        return np.sum(self.probabilities * self.deviations(values) ** 2, axis=-1)
