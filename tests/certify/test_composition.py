"""The composition alone: B >= lambda_max(J'^T C(z') J') for J' in [Jc +- R] and z' in the logits' box.

Random and adversarial (corners of the boxes, the reference row zero as the certifier builds it).
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.certify.composition import compose
from fimaudit.fisher.exact import exact_lambda_max


@pytest.mark.parametrize("seed", range(6))
def test_bound_holds_over_the_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, d = 5, 7
    z = rng.standard_normal(k) * (1 + 3 * seed)  # from flat to confident predictions
    reference = int(np.argmax(z))
    centre = rng.standard_normal((k, d))
    centre[reference] = 0.0  # rows J~ = grad(z_k - z_r): the reference row is exactly zero
    radius = np.abs(rng.standard_normal((k, d))) * 0.05
    radius[reference] = 0.0
    width = np.abs(rng.standard_normal(k)) * 0.3
    bound = compose(centre, radius, z, z - width, z + width).value
    worst = 0.0
    for trial in range(400):
        corner = trial % 2 == 0
        unit = np.sign(rng.standard_normal((k, d))) if corner else rng.uniform(-1, 1, (k, d))
        jac = centre + radius * unit
        shift = np.sign(rng.standard_normal(k)) if corner else rng.uniform(-1, 1, k)
        worst = max(worst, exact_lambda_max(jac, z + width * shift, with_eigenvector=False).value)
    assert worst <= bound


def test_point_is_the_exact_lambda_max() -> None:
    rng = np.random.default_rng(1)
    centre, z = rng.standard_normal((4, 6)), rng.standard_normal(4)
    exact = exact_lambda_max(centre, z, with_eigenvector=False).value
    value = compose(centre, np.zeros_like(centre), z, z, z).value
    assert exact <= value <= exact * (1 + 1e-6)
