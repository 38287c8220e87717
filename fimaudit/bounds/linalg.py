"""Spectral norms that stay upper bounds in floating point, and gains of broadcasting.

Why a margin: LAPACK computes singular values with an absolute error of a small multiple of
n * eps * sigma_max (backward stability), and an FFT adds log(n) * eps * sum|w|. A certified
bound must not fall below the exact value because of that, so every computed norm is inflated
by ``RELATIVE_MARGIN`` (far above those errors for any realistic size, far below anything a
reader would notice) plus an absolute term for the FFT case.
"""

from __future__ import annotations

import math

import numpy as np

RELATIVE_MARGIN = 1e-8


def certify(value: float, absolute: float = 0.0) -> float:
    """``value`` inflated by the relative safety margin (and an absolute one)."""
    return float(value) * (1.0 + RELATIVE_MARGIN) + float(absolute)


def spectral_norm(matrix: np.ndarray) -> float:
    """Certified ||A||_2 of a real matrix (exact SVD in float64, plus the margin)."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.size == 0:
        return 0.0
    if a.ndim == 1:
        return certify(float(np.linalg.norm(a)))
    if min(a.shape) == 1:
        return certify(float(np.linalg.norm(a)))
    if min(a.shape) <= 64:
        return certify(float(np.linalg.svd(a, compute_uv=False)[0]))
    # Large: the top eigenvalue of the smaller Gram matrix (symmetric, values only) costs a
    # fraction of a full SVD; its relative error ~ n eps stays far below the margin.
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    top = float(np.linalg.eigvalsh(gram)[-1])
    return certify(math.sqrt(max(top, 0.0)))


def batched_spectral_norms(matrices: np.ndarray, chunk_entries: int = 1 << 22) -> np.ndarray:
    """Largest singular value of each matrix in a [..., m, n] stack (float64/complex128), no margin.

    Processed in chunks so that a large stack of FFT blocks does not need twice its memory.
    """
    stack = np.asarray(matrices)
    lead = stack.shape[:-2]
    m, n = stack.shape[-2:]
    flat = stack.reshape(-1, m, n)
    out = np.empty(flat.shape[0], dtype=np.float64)
    step = max(1, chunk_entries // max(1, m * n))
    for start in range(0, flat.shape[0], step):
        block = flat[start : start + step]
        if min(m, n) == 1:
            out[start : start + step] = np.sqrt(np.sum(np.abs(block) ** 2, axis=(1, 2)))
        elif min(m, n) <= 8:
            out[start : start + step] = np.linalg.svd(block, compute_uv=False)[:, 0]
        else:
            # Eigenvalues of the short side's Gram matrix cost a fraction of an SVD, and the top
            # one is accurate to eps * sigma_max^2, i.e. sigma_max to eps / 2 relative.
            gram = block.conj().transpose(0, 2, 1) @ block if m > n else block @ block.conj().transpose(0, 2, 1)
            out[start : start + step] = np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0))
    return out.reshape(lead)


def max_spectral_norm(matrices: np.ndarray, power_steps: int = 8, chunk: int = 4) -> float:
    """Max over a [F, m, n] stack of the largest singular value, without decomposing them all.

    Every matrix gets a cheap upper bound, min(||A||_F, sqrt(||A||_1 ||A||_inf)), and a lower
    bound ||A v|| / ||v|| after a few batched power steps (true for any v). Matrices whose upper
    bound is below the best lower bound cannot hold the maximum; the rest are decomposed exactly,
    largest upper bound first, stopping once no remaining upper bound exceeds the exact maximum
    found. The result is the exact maximum (up to rounding) for blocks up to 128 wide, and within
    0.1% above it for larger ones (a 12-step Gram iteration bound instead of an eigensolver):
    pruning only skips matrices that provably cannot reach it.
    """
    stack = np.asarray(matrices)
    flat = stack.reshape(-1, *stack.shape[-2:])
    if flat.shape[0] == 0:
        return 0.0
    magnitude = np.abs(flat)
    frobenius = np.sqrt(np.sum(magnitude**2, axis=(1, 2)))
    l1 = magnitude.sum(axis=1).max(axis=1)
    linf = magnitude.sum(axis=2).max(axis=1)
    upper = np.minimum(frobenius, np.sqrt(l1 * linf)) * (1.0 + 1e-12)
    del magnitude
    if min(flat.shape[1:]) > 8:
        upper = np.minimum(upper, gram_iteration_bounds(flat))
    rng = np.random.default_rng(0)
    vector = rng.standard_normal((flat.shape[0], flat.shape[2], 1)) + 0j
    lower = np.zeros(flat.shape[0])
    for _ in range(power_steps):
        vector /= np.maximum(np.linalg.norm(vector, axis=1, keepdims=True), 1e-300)
        image = flat @ vector
        lower = np.maximum(lower, np.linalg.norm(image, axis=(1, 2)))
        vector = flat.conj().transpose(0, 2, 1) @ image
    order = np.argsort(-upper)
    best = 0.0
    first = int(np.argmax(lower))
    candidates = [first] + [int(i) for i in order if upper[i] > lower[first] and i != first]
    for start in range(0, len(candidates), chunk):
        indices = candidates[start : start + chunk]
        if upper[indices[0]] <= best:
            break
        if min(flat.shape[1:]) <= 128:
            best = max(best, float(batched_spectral_norms(flat[indices]).max()))
        else:  # large blocks: 12 Gram steps bound sigma_1 within rank^(1/8192) (< 0.1%), no eigensolver
            best = max(best, float(gram_iteration_bounds(flat[indices], steps=12).max()))
    return best


def gram_iteration_bounds(matrices: np.ndarray, steps: int = 6, chunk_entries: int = 1 << 22) -> np.ndarray:
    """Upper bounds on the largest singular value of each matrix of a [F, m, n] stack.

    Gram iteration (Delattre et al., 2023): with G_0 = A and G_{k+1} = G_k G_k^H,
    sigma_1(G_k) = sigma_1(A)^(2^k) <= ||G_k||_F, so sigma_1(A) <= ||G_k||_F^(1/2^k), within a
    factor rank^(1/2^(k+1)) of the truth (1.05 for rank 512 after 6 steps). Each step is one
    matrix product (fast BLAS) instead of an eigen-decomposition; iterates are rescaled to
    norm 1 and the scales kept in logarithms. Used to prune, then confirmed exactly.
    """
    flat = np.asarray(matrices)
    if flat.shape[1] > flat.shape[2]:
        flat = flat.conj().transpose(0, 2, 1)
    out = np.empty(flat.shape[0], dtype=np.float64)
    step_size = max(1, chunk_entries // max(1, flat.shape[1] * flat.shape[2]))
    for start in range(0, flat.shape[0], step_size):
        block = flat[start : start + step_size].astype(np.complex128)
        peak = np.abs(block).max(axis=(1, 2))
        scale = np.where(peak > 0, peak, 1.0)
        block = block / scale[:, None, None]  # no underflow in the norms below
        norms = np.linalg.norm(block, axis=(1, 2))
        safe = np.where(norms > 0, norms, 1.0)
        logs = np.log(safe) + np.log(scale)
        current = block / safe[:, None, None]
        current = current @ current.conj().transpose(0, 2, 1)
        for _ in range(steps):
            size = np.linalg.norm(current, axis=(1, 2))
            size = np.where(size > 0, size, 1.0)
            logs = 2.0 * logs + np.log(size)  # log-scale of G_k before the next product
            current = current / size[:, None, None]
            current = current @ current.conj().transpose(0, 2, 1)
        final = np.linalg.norm(current, axis=(1, 2))
        total = 2.0 * logs + np.log(np.where(final > 0, final, 1e-300))
        bound = np.exp(total / 2.0 ** (steps + 1))
        out[start : start + step_size] = np.where(peak > 0, bound * (1.0 + 1e-9), 0.0)
    return out


def broadcast_copies(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """How many output entries each input entry is copied to by numpy broadcasting."""
    size_in = int(np.prod(in_shape)) if in_shape else 1
    size_out = int(np.prod(out_shape)) if out_shape else 1
    return max(1, size_out // max(1, size_in))


def broadcast_gain(weight: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> float:
    """Exact norm of dx -> weight * broadcast(dx) (elementwise product after broadcasting).

    Each input entry j lands on the output entries that copy it; the operator is then
    diagonal in j with entries sqrt(sum over those copies of weight^2), so its norm is the
    largest of them.
    """
    w2 = np.broadcast_to(np.asarray(weight, dtype=np.float64) ** 2, out_shape)
    rank = len(out_shape)
    padded = (1,) * (rank - len(in_shape)) + tuple(in_shape)
    axes = tuple(i for i in range(rank) if padded[i] == 1 and out_shape[i] != 1)
    summed = w2.sum(axis=axes) if axes else w2
    return certify(math.sqrt(float(np.max(summed)))) if summed.size else 0.0


def max_abs_row_sum(matrix: np.ndarray) -> float:
    """||A||_inf (largest absolute row sum): the gain of A on max-abs magnitudes."""
    a = np.abs(np.asarray(matrix, dtype=np.float64))
    return float(a.sum(axis=-1).max()) if a.size else 0.0
