"""Exact lambda_max(F) from the K x K form: eig(A J J^T A^T), float64 whatever J's dtype.

F = J^T C J is d x d with rank <= K - 1. With C = A^T A, A = diag(sqrt p) (I - 1 p^T)
(``covariance.SoftmaxCovariance``), F = H^T H for H = A J, whose rows are sqrt(p_k) (g_k - g_bar),
so F's non-zero spectrum is that of the K x K Gram matrix H H^T, and the top eigenvector of F is
H^T u / ||.|| for the top u. trace(F) = ||H||_F^2 = sum_k p_k ||g_k - g_bar||^2.

Why H and not C^{1/2} (J J^T) C^{1/2}: forming J J^T first keeps every component the class
gradients share, which the covariance must then cancel; the eigen-decomposed root cancels it only
to sqrt(eps), and on saturated softmaxes with a shared gradient component lambda_max lost up to
4 digits (measured; see covariance.py). H is formed from deviations g_k - g_r of the rows in
float64, where the shared part cancels exactly, block by block over the input so that no second
K x d array exists (1.1 GiB at K = 1000, 3x224x224).
"""

from __future__ import annotations

import numpy as np

from fimaudit.fisher.covariance import SoftmaxCovariance
from fimaudit.fisher.result import SpectralResult

# Input elements per block of H = A J (K x block float64 at a time; 8 MiB at K = 1000).
_BLOCK = 1024


def _centred_blocks(jac: np.ndarray, covariance: SoftmaxCovariance):
    """Blocks of H = A J [K, block] in float64, over the input axis."""
    for start in range(0, jac.shape[1], _BLOCK):
        columns = np.asarray(jac[:, start : start + _BLOCK], dtype=np.float64)
        yield start, covariance.factor(columns.T).T


def _fisher_gram(jac: np.ndarray, covariance: SoftmaxCovariance) -> np.ndarray:
    """H H^T (K x K, float64), summed over input blocks."""
    k = jac.shape[0]
    gram = np.zeros((k, k), dtype=np.float64)
    for _, block in _centred_blocks(jac, covariance):
        gram += block @ block.T
    return 0.5 * (gram + gram.T)


def exact_lambda_max(jacobian: np.ndarray, logits: np.ndarray, with_eigenvector: bool = True) -> SpectralResult:
    """lambda_max(F), trace(F) and the top eigenvector of F for one sample.

    ``jacobian`` is dz/dx flattened to [K, d] (any float dtype; cast to float64 block by block
    before any product); ``logits`` is z [K].
    """
    jac = np.asarray(jacobian)
    covariance = SoftmaxCovariance(logits)
    gram = _fisher_gram(jac, covariance)
    values, vectors = np.linalg.eigh(gram)
    top = float(max(values[-1], 0.0))
    eigenvector = None
    if with_eigenvector:
        direction = np.empty(jac.shape[1], dtype=np.float64)
        for start, block in _centred_blocks(jac, covariance):
            direction[start : start + block.shape[1]] = block.T @ vectors[:, -1]
        norm = np.linalg.norm(direction)
        eigenvector = direction / norm if norm > 0 else direction
    return SpectralResult(
        value=top,
        kind="exact",
        trace=float(np.trace(gram)),
        eigenvector=eigenvector,
        diagnostics={"second_eigenvalue": float(max(values[-2], 0.0)) if values.size > 1 else 0.0},
    )
