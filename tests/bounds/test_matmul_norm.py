"""matmul_operator_norm: the exact norm of dV -> matmul(dV, F) (or matmul(F, dV)) under broadcasting.

The reference is the dense matrix of the linear map, built column by column with numpy's own
matmul broadcasting, and its largest singular value: the rule must never be below it (a
certified bound) and within its safety margin above it.
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.bounds.rules.dense import matmul_operator_norm


def dense_map_norm(fixed: np.ndarray, varying_shape: tuple[int, ...], fixed_on_right: bool) -> float:
    """||dV -> matmul(dV, F)||_2 (or matmul(F, dV)) from the map's dense matrix."""
    size = int(np.prod(varying_shape))
    columns = []
    for index in range(size):
        unit = np.zeros(size)
        unit[index] = 1.0
        dv = unit.reshape(varying_shape)
        columns.append((dv @ fixed if fixed_on_right else fixed @ dv).reshape(-1))
    return float(np.linalg.svd(np.stack(columns, axis=1), compute_uv=False)[0])


CASES = [
    # (fixed shape, varying shape, fixed on the right)
    ((3, 4, 5), (3, 6, 4), True),  # one F per batch entry
    ((1, 3, 4, 5), (2, 3, 6, 4), True),  # F broadcast over the lead axis: copies of its 3 matrices
    ((2, 1, 4, 5), (2, 3, 6, 4), True),  # F broadcast over the second axis
    ((3, 5, 4), (2, 3, 4, 6), False),  # left product, F broadcast
    ((4, 5), (2, 3, 6, 4), True),  # one weight matrix for every entry
    ((2, 3, 4, 5), (3, 6, 4), True),  # dV broadcast onto F's batch: stacked side by side
    ((2, 3, 5, 4), (3, 4, 6), False),  # ... on top of each other
]


@pytest.mark.parametrize(("fixed_shape", "varying_shape", "right"), CASES)
def test_matmul_operator_norm_is_the_exact_norm_never_below(fixed_shape, varying_shape, right) -> None:
    rng = np.random.default_rng(sum(fixed_shape) + 7 * sum(varying_shape))
    fixed = rng.standard_normal(fixed_shape)
    fixed[..., 0, :] *= 3.0  # unequal matrices: the maximum must be found, not any one of them
    exact = dense_map_norm(fixed, varying_shape, right)
    bound = matmul_operator_norm(fixed, varying_shape, fixed_on_right=right)
    assert exact <= bound <= exact * (1 + 1e-6)


def test_the_largest_matrix_is_found_when_it_is_broadcast() -> None:
    """Adversarial: one matrix of the broadcast stack far larger than the rest."""
    rng = np.random.default_rng(0)
    fixed = rng.standard_normal((1, 5, 4, 4))
    fixed[0, 3] *= 50.0
    exact = dense_map_norm(fixed, (3, 5, 2, 4), True)
    assert exact <= matmul_operator_norm(fixed, (3, 5, 2, 4), fixed_on_right=True) <= exact * (1 + 1e-6)
