"""Points of a ball (l2 or l_inf) met with a box: random inside, on the boundary, and corners."""

from __future__ import annotations

import numpy as np


def project(points: np.ndarray, centre: np.ndarray, eps: float, norm: float,
            low: float = -np.inf, high: float = np.inf) -> np.ndarray:
    """Onto the ball, then the box (the box projection keeps a point of the l_inf ball inside it;
    for l2, clipping moves coordinates towards the centre's box, so the norm can only shrink when the
    centre lies in the box)."""
    delta = points - centre
    flat = delta.reshape(delta.shape[0], -1)
    if np.isinf(norm):
        flat = np.clip(flat, -eps, eps)
    else:
        lengths = np.linalg.norm(flat, axis=1, keepdims=True)
        flat = flat * np.minimum(1.0, eps / np.maximum(lengths, 1e-300))
    return np.clip(centre + flat.reshape(delta.shape), low, high)


def ball_points(rng: np.random.Generator, centre: np.ndarray, eps: float, norm: float, count: int,
                low: float = -np.inf, high: float = np.inf, shrink: float = 1.0) -> np.ndarray:
    """``count`` points: half uniform inside, half on the boundary (corners for l_inf), all in the box."""
    d = centre.size
    radius = eps * shrink
    if np.isinf(norm):
        inside = rng.uniform(-radius, radius, (count // 2, d))
        corners = rng.choice([-radius, radius], size=(count - count // 2, d))
        flat = np.concatenate([inside, corners])
    else:
        directions = rng.standard_normal((count, d))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        scales = np.ones(count)
        scales[: count // 2] = rng.uniform(size=count // 2) ** (1.0 / d)
        flat = directions * (radius * scales)[:, None]
    points = centre[None] + flat.reshape((count, *centre.shape))
    return np.clip(points, low, high)
