"""VALIDITY: B(x, eps) >= lambda_max(F(x')) on every sample model, at three radii, in l2 and l_inf.

x' is found two ways: random points of the ball (inside, on the boundary, corners) and projected
gradient ascent on lambda_max inside the ball (fimaudit's graph gradients on ONNX Runtime steer
it). The two points with the largest float32 values among all of them are then evaluated
exactly in float64 (tests/bounds/reference64) and compared with B without tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.fisher.exact import exact_lambda_max
from tests.certify.models import MODELS, ascent_direction, ready
from tests.certify.sampling import ball_points, project

RADII = (1e-4, 1e-3, 1e-2)  # times ||x||_2 (l2) or ||x||_2 / sqrt(d) (l_inf)
RANDOM_POINTS = 24
RESTARTS, STEPS = 4, 12
EXACT_POINTS = 2  # the largest float32 values among random and ascent points, evaluated in float64


def _lambda32(model, points: np.ndarray) -> np.ndarray:
    jacobians = model.gradients.dense(points.astype(np.float32))
    logits = model.gradients.logits(points.astype(np.float32))
    return np.array([exact_lambda_max(j, z, with_eigenvector=False).value for j, z in zip(jacobians, logits,
                                                                                            strict=True)])


def _ascend(model, rng, centre: np.ndarray, eps: float, norm: float) -> np.ndarray:
    points = ball_points(rng, centre, eps, norm, RESTARTS)
    step = eps / 4
    for _ in range(STEPS):
        jacobians = model.gradients.dense(points.astype(np.float32))
        logits = model.gradients.logits(points.astype(np.float32))
        direction = ascent_direction(jacobians, logits).reshape(points.shape)
        flat = direction.reshape(RESTARTS, -1)
        if np.isinf(norm):
            flat = np.sign(flat)
        else:
            flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-300)
        points = project(points + step * flat.reshape(points.shape), centre, eps, norm)
        step *= 0.85
    return points


@pytest.mark.parametrize("norm", [2.0, np.inf], ids=["l2", "linf"])
@pytest.mark.parametrize("factor", RADII)
@pytest.mark.parametrize("name", MODELS)
def test_certificate_is_above_lambda_max_in_the_ball(name: str, factor: float, norm: float) -> None:
    model = ready(name)
    rng = np.random.default_rng(int(factor * 1e6) + len(name))
    centre = model.inputs[3].astype(np.float64)
    eps = factor * float(np.linalg.norm(centre)) / (1.0 if norm == 2.0 else np.sqrt(centre.size))
    bound = model.certifier.bound(centre, eps, "2" if norm == 2.0 else "inf").value
    randoms = ball_points(rng, centre, eps, norm, RANDOM_POINTS)
    points = np.concatenate([randoms, _ascend(model, rng, centre, eps, norm)])
    candidates = points[np.argsort(_lambda32(model, points))[-EXACT_POINTS:]]
    exact = [model.reference.lambda_max(point) for point in candidates]
    assert max(exact) <= bound, (name, factor, norm, max(exact), bound)
