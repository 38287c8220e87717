"""From the interval Jacobian and the logits' ranges to B(x, eps) >= lambda_max(F(x')) over the set.

The derivation is in docs/CERTIFICATES.md; in short, for every x' in the set, with rows
J~ = P J (any P = I - 1 a^T: C 1 = 0, so C^{1/2} P = C^{1/2}) lying in [J~c - R, J~c + R]:

    lambda_max(F(x')) = ||C'^{1/2} J~'||^2 <= ( sqrt(Lambda) + sqrt(c_max) rho )^2,

- rho >= ||J~' - J~c||_2: the spectral norm of the non-negative radius matrix R;
- c_max >= ||C'|| <= trace C' = sum_k p'_k (1 - p'_k), each term maximised over its certified
  probability range (and never above 1/2);
- with row k of J~ belonging to class k, C' <= diag(p') <= diag(p_hi) also gives
  ||C'^{1/2} D|| <= sqrt(sum_k p_hi,k ||D_k||^2) and Lambda <= ||diag(p_hi)^{1/2} J~c||^2; the reference
  row is exactly zero, so a confident prediction (p_r near 1) weighs only the small p_k;
- Lambda >= lambda_max(C'^{1/2} G C'^{1/2}) with G = J~c J~c^T: at p' = p(x) it is exactly
  lambda_max(F(x)); for p' = p + delta, C' - C <= diag(delta) - p delta^T - delta p^T (dropping
  -delta delta^T <= 0), so by Weyl Lambda <= lambda_max(F(x)) + ||G|| (||delta||_inf +
  2 ||p||_2 ||delta||_2); also Lambda <= c_max ||G||. The smaller is taken.
At eps = 0 (R = 0, delta = 0) this is lambda_max(F(x)) itself, up to the rounding margin.
Probabilities come from intervals of logit differences D_jk = z_j - z_k: p_k = 1 / sum_j e^{D_jk}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fimaudit.bounds.linalg import LANCZOS_FROM, certify, spectral_norm
from fimaudit.fisher.covariance import log_softmax
from fimaudit.fisher.exact import exact_lambda_max

#: Relative error allowed for the float64 values at x (activations and Jacobian rows): forward
#: error analysis gives ~depth * n * 2^-53 * (condition); this is the one floating-point assumption.
CENTRE_TRUST = 1e-12


@dataclass(frozen=True)
class Composition:
    """B and the quantities it is made of (reported as the certificate's evidence)."""

    value: float
    at_point: float  # lambda_max(F(x)) computed from the centre rows (B's limit as eps -> 0)
    jacobian_radius: float  # rho
    covariance: float  # c_max
    curvature: float  # Lambda


def difference_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[D_lo, D_hi] with D_jk = z_j - z_k from the logits' box (diagonal exactly 0)."""
    d_lo = lo[:, None] - hi[None, :]
    d_hi = hi[:, None] - lo[None, :]
    np.fill_diagonal(d_lo, 0.0)
    np.fill_diagonal(d_hi, 0.0)
    return np.nextafter(d_lo, -np.inf), np.nextafter(d_hi, np.inf)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def probability_ranges(d_lo: np.ndarray, d_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p_lo, p_hi, 1 - p_lo, 1 - p_hi) per class; the complements without cancellation near 1."""
    margin = 1e-12  # relative error of exp/log here is ~1e-15
    p_lo = np.exp(-_logsumexp(d_hi, axis=0)) * (1 - margin)
    p_hi = np.minimum(np.exp(-_logsumexp(d_lo, axis=0)) * (1 + margin), 1.0)
    off = ~np.eye(d_lo.shape[0], dtype=bool)
    # S = sum_{j != k} e^{D_jk}; 1 - p = S / (1 + S) = 1 / (1 + e^{-log S}), in logs (no overflow)
    with np.errstate(divide="ignore"):
        log_hi = _logsumexp(np.where(off, d_hi, -np.inf), axis=0)
        log_lo = _logsumexp(np.where(off, d_lo, -np.inf), axis=0)
    complement_hi = np.minimum(np.exp(-np.logaddexp(0.0, -log_hi)) * (1 + margin) + 1e-300, 1.0)  # 1 - p_lo
    complement_lo = np.exp(-np.logaddexp(0.0, -log_lo)) * (1 - margin)  # 1 - p_hi
    return p_lo, p_hi, complement_hi, complement_lo


def covariance_bound(p_lo: np.ndarray, p_hi: np.ndarray, q_hi: np.ndarray, q_lo: np.ndarray) -> float:
    """c_max = min(1/2, sum_k max_{t in [p_lo, p_hi]} t (1 - t)) (q = 1 - p given separately)."""
    at_low = p_lo * q_hi
    at_high = p_hi * q_lo
    peak = np.where((p_lo <= 0.5) & (p_hi >= 0.5), 0.25, np.maximum(at_low, at_high))
    return min(0.5, certify(float(peak.sum())))


def spectral_norm_bound(matrix: np.ndarray) -> float:
    """A certified ||M||_2 of any real matrix (from the smaller Gram matrix, plus the margin).

    For a non-negative R it also bounds ||D||_2 for every |D| <= R element-wise (Perron-Frobenius).
    """
    if not np.any(matrix):
        return 0.0
    if min(matrix.shape) >= LANCZOS_FROM:  # Lanczos + a Cholesky certificate (a full eigensolver: seconds)
        return spectral_norm(matrix)
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    top = float(np.linalg.eigvalsh(gram)[-1])
    return certify(math.sqrt(max(top, 0.0)), absolute=1e-15 * math.sqrt(float(np.trace(gram))))


def row_difference_ranges(centre: np.ndarray, radius: np.ndarray, logits: np.ndarray, reference: int,
                          eps: float, norm: float, deviation: float) -> tuple[np.ndarray, np.ndarray]:
    """[D_lo, D_hi] from the rows J~_k = grad (z_k - z_r) by the mean value theorem.

    |D_kr(x') - D_kr(x)| <= eps sup ||J~_k||_q over the set, and ||J~_k(xi) - J~c_k||_q is at most
    ||r_k||_q (the interval rows) and at most the telescoped deviation (times sqrt(d) for q = 1:
    ||v||_1 <= sqrt(d) ||v||_2). Then D_jk = D_jr - D_kr.
    """
    q = 1.0 if math.isinf(norm) else 2.0
    scale = 1.0 if q == 2.0 else math.sqrt(centre.shape[1])
    moved = np.minimum(np.linalg.norm(radius, ord=q, axis=1), deviation * scale)
    width = eps * (np.linalg.norm(centre, ord=q, axis=1) + moved) * (1.0 + 1e-12)
    to_reference = logits - logits[reference]
    slack = CENTRE_TRUST * (np.abs(logits) + np.abs(logits[reference]))
    low, high = to_reference - width - slack, to_reference + width + slack
    d_lo, d_hi = low[:, None] - high[None, :], high[:, None] - low[None, :]
    np.fill_diagonal(d_lo, 0.0)
    np.fill_diagonal(d_hi, 0.0)
    return np.nextafter(d_lo, -np.inf), np.nextafter(d_hi, np.inf)


def compose(centre: np.ndarray, radius: np.ndarray, logits_at: np.ndarray,
            logits_lo: np.ndarray, logits_hi: np.ndarray, deviation: float = math.inf,
            rows_of: tuple[int, float, float] | None = None,
            weighted: Callable[[np.ndarray], float] | None = None) -> Composition:
    """B(x, eps) from rows [K', d] (centre, radius), the logits at x and their certified box.

    ``deviation`` is another certified bound on ||J~(x') - J~c||_2 (telescoping.py); the smaller is used.
    ``rows_of`` = (reference class r, eps, norm) when the rows are grad (z_k - z_r) over that ball:
    the logit differences then also get the mean-value ranges of ``row_difference_ranges``.
    ``weighted(w)`` bounds ||diag(w) (J~(x') - J~(x))||_2 (telescoping with weighted rows).
    """
    centre = centre.reshape(centre.shape[0], -1)
    radius = radius.reshape(radius.shape[0], -1)
    z = np.asarray(logits_at, dtype=np.float64).reshape(-1)
    lam0 = certify(exact_lambda_max(centre, z, with_eigenvector=False).value)
    gram = centre @ centre.T
    g_norm = certify(float(np.linalg.eigvalsh(gram)[-1]), absolute=1e-15 * float(np.trace(gram)))
    d_lo, d_hi = difference_ranges(np.asarray(logits_lo).reshape(-1), np.asarray(logits_hi).reshape(-1))
    trusted = deviation + CENTRE_TRUST * float(np.linalg.norm(centre))
    if rows_of is not None:
        reference, eps, norm = rows_of
        r_lo, r_hi = row_difference_ranges(centre, radius, z, reference, eps, norm, trusted)
        d_lo, d_hi = np.maximum(d_lo, r_lo), np.minimum(d_hi, r_hi)
    p_lo, p_hi, q_hi, q_lo = probability_ranges(d_lo, d_hi)
    c_max = covariance_bound(p_lo, p_hi, q_hi, q_lo)
    p0 = np.exp(log_softmax(z))
    delta = np.maximum(np.maximum(p_hi - p0, p0 - p_lo), 0.0)
    shift = float(delta.max()) + 2.0 * float(np.linalg.norm(p0)) * float(np.linalg.norm(delta))
    curvature = min(certify(lam0 + g_norm * shift), certify(c_max * g_norm))
    # The centre rows are the float64 Jacobian at x, trusted to CENTRE_TRUST relative (Frobenius).
    rho = min(spectral_norm_bound(radius), deviation) + CENTRE_TRUST * float(np.linalg.norm(centre))
    spread = math.sqrt(c_max) * rho
    if centre.shape[0] == z.size:  # row k belongs to class k: C' <= diag(p') <= diag(p_hi)
        weights = np.sqrt(p_hi)[:, None]
        curvature = min(curvature, certify(spectral_norm_bound(weights * centre) ** 2))
        rows = np.minimum(np.linalg.norm(radius, axis=1) + CENTRE_TRUST * np.linalg.norm(centre, axis=1), rho)
        spread = min(spread, certify(math.sqrt(float(np.sum(p_hi * rows**2)))))
        if weighted is not None:
            trust = CENTRE_TRUST * float(np.linalg.norm(weights * centre))
            spread = min(spread, certify(weighted(np.sqrt(p_hi)) + trust))
    value = certify((math.sqrt(curvature) + spread) ** 2)
    return Composition(value, lam0, rho, c_max, curvature)
