"""The gradient check passes for correct gradients and fails for a wrong one."""

from __future__ import annotations

import numpy as np

from fimaudit.sanity import gradient_check
from fimaudit.runtime import RunAccounting


class MatrixJacobian:
    """A linear model's exact Jacobian (the InputJacobian protocol on a fixed matrix)."""

    name = "matrix"

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix
        self.num_classes, self.input_size = matrix.shape
        self.accounting = RunAccounting()

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return inputs.reshape(inputs.shape[0], -1) @ self.matrix.T

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        return np.repeat(self.matrix[None], inputs.shape[0], axis=0)

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        return tangents @ self.matrix.T

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        return cotangents @ self.matrix


def test_gradient_check_passes_on_agreement_and_fails_on_a_wrong_rule() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((5, 12))
    inputs = rng.standard_normal((4, 12))
    noisy = matrix * (1 + 1e-4 * rng.standard_normal(matrix.shape))
    good = gradient_check(MatrixJacobian(noisy), [MatrixJacobian(matrix)], inputs)
    assert good.passed and len(good.relative_errors) == 3
    wrong = matrix.copy()
    wrong[:, 3] *= -1.0  # one input's gradient with the wrong sign
    bad = gradient_check(MatrixJacobian(wrong), [MatrixJacobian(matrix)], inputs)
    assert not bad.passed
    assert min(bad.relative_errors) > 0.05


def test_each_direction_keeps_its_best_reference() -> None:
    """A reference that is right in some directions rescues only those directions."""
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((4, 10))
    inputs = rng.standard_normal((3, 10))
    off = matrix * 1.5  # 50% off everywhere
    both = gradient_check(MatrixJacobian(matrix), [MatrixJacobian(off), MatrixJacobian(matrix)], inputs)
    assert both.passed and max(both.relative_errors) < 1e-12
    only_off = gradient_check(MatrixJacobian(matrix), [MatrixJacobian(off)], inputs)
    assert not only_off.passed
