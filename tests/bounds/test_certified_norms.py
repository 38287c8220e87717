"""The certified maxima behind the conv bound: ``max_spectral_norm`` and ``cholesky_certifies``.

Certified means: with the caller's margin (``certify``), never below the exact value (float64
eigvalsh of the Gram matrix), at random stacks and at stacks built to mislead the
power-iteration ranking (the largest block has a nearly degenerate top, so its power estimate
lags; every block ties within 1e-10). The conv rule's channel counts in
tests/bounds/test_conv_bound.py are small (<= 4, exact decompositions only); the conv cases
here are wide enough to take the Cholesky path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.bounds.linalg import (
    LANCZOS_FROM,
    RELATIVE_MARGIN,
    certify,
    cholesky_certifies,
    max_spectral_norm,
    spectral_norm,
)
from fimaudit.bounds.rules.conv import conv_norm_bound
from tests.bounds.test_conv_bound import conv_matrix


def exact_max(stack: np.ndarray) -> float:
    flat = stack.reshape(-1, *stack.shape[-2:])
    return float(max(np.linalg.svd(block, compute_uv=False)[0] for block in flat))


def random_stack(rng: np.random.Generator, count: int, rows: int, cols: int) -> np.ndarray:
    return rng.standard_normal((count, rows, cols)) + 1j * rng.standard_normal((count, rows, cols))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(2, 24), st.integers(2, 24), st.integers(0, 2**16))
def test_max_is_exact_and_never_below(count: int, rows: int, cols: int, seed: int) -> None:
    stack = random_stack(np.random.default_rng(seed), count, rows, cols)
    truth = exact_max(stack)
    value = max_spectral_norm(stack)
    assert certify(value) >= truth  # callers certify: the margin covers the eigensolver's rounding
    assert value <= truth * (1 + 1e-8)


def with_singular_values(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    n = values.size
    u, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    return (u * values) @ v.conj().T


@pytest.mark.parametrize("seed", range(4))
def test_adversarial_ranking(seed: int) -> None:
    """The largest block has top singular values 1, 1 - 1e-9 (power iteration cannot separate
    them) and sits among 30 blocks whose tops are 1 - 1e-10 with a clean gap: the ranking by
    power estimates is wrong or tied, and the answer must still be >= 1."""
    rng = np.random.default_rng(seed)
    n = 16
    blocks = []
    for index in range(31):
        values = np.linspace(0.5, 0.1, n)
        if index == 17:
            values[:2] = [1.0, 1.0 - 1e-9]
        else:
            values[0] = 1.0 - 1e-10
        blocks.append(with_singular_values(rng, values))
    stack = np.stack(blocks)
    truth = exact_max(stack)
    value = max_spectral_norm(stack)
    assert certify(value) >= truth  # callers certify: the margin covers the eigensolver's rounding
    assert value <= truth * (1 + 1e-8)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(1, 60), st.booleans(), st.integers(0, 2**16))
def test_cholesky_certificate(n: int, inner: int, complex_: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((inner, n)) + (1j * rng.standard_normal((inner, n)) if complex_ else 0)
    gram = a.conj().T @ a
    top = float(np.linalg.eigvalsh(gram)[-1])
    certified = cholesky_certifies(gram, top * (1 + 1e-9), inner)
    assert certified is not None and certified >= top
    below = cholesky_certifies(gram, top * (1 - 1e-6), inner)
    assert below is None or below >= top  # a claimed bound is never below the truth


@pytest.mark.parametrize(
    ("channels", "groups", "stride", "kernel", "size"),
    [(16, 1, 1, 3, 5), (12, 1, 2, 3, 6), (16, 16, 1, 3, 5), (12, 4, 2, 5, 6)],
)
def test_wide_conv_bound_is_above_the_exact_norm(channels: int, groups: int, stride: int, kernel: int,
                                                 size: int) -> None:
    rng = np.random.default_rng(channels + groups + stride)
    weight = rng.standard_normal((channels, channels // groups, kernel, kernel))
    pad = kernel // 2
    exact = float(np.linalg.norm(conv_matrix(weight, [size, size], [stride] * 2, [pad] * 4, [1, 1], groups), 2))
    bound, method = conv_norm_bound(weight, [size + 2 * pad] * 2, [stride] * 2, [1, 1], groups)
    assert "FFT" in method
    assert bound >= exact
    if stride == 1:  # the circular bound on the padded ring is close for stride 1
        assert bound <= exact * 1.5 * (1 + RELATIVE_MARGIN)


@pytest.mark.parametrize("gap", [0.5, 1e-10])
def test_large_dense_norm_takes_the_certified_lanczos_path(gap: float) -> None:
    """A Gram matrix of LANCZOS_FROM rows: Lanczos + Cholesky; also with a top pair 1e-10 apart."""
    rng = np.random.default_rng(3)
    n = LANCZOS_FROM
    values = np.linspace(1.0 - gap, 0.01, n)
    values[0] = 1.0
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n + 40, n)))
    matrix = (u * values) @ v.T
    truth = float(np.linalg.svd(matrix, compute_uv=False)[0])
    value = spectral_norm(matrix)
    assert truth <= value <= truth * (1 + 2e-8)
