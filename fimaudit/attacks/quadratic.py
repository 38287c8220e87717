"""The quadratic regime: where KL(p(x) || p(x + t v)) is still 1/2 t^2 lambda_max along the top eigenvector.

For a unit eigenvector v of F(x) with eigenvalue lambda_max, KL(p(x) || p(x + t v)) =
1/2 t^2 lambda_max + O(t^3). The check runs the model forward at x + t v and x - t v for t on a
geometric grid (by default from 1e-3 to 10 in units of 1 / sqrt(lambda_max), where the quadratic
form is 1/2) and reports the largest t up to which both directions agree with the quadratic form
within ``tolerance`` (10%) at every grid point: the radius in which lambda_max describes the model.
"""

from __future__ import annotations

import numpy as np

from fimaudit.attacks.forward import Forward
from fimaudit.results import QuadraticCheck


def kl_divergence(logits: np.ndarray, others: np.ndarray) -> np.ndarray:
    """KL(softmax(logits) || softmax(others_i)) in float64 for each row of ``others`` [M, K]."""
    log_p = _log_softmax(np.asarray(logits, dtype=np.float64)[None])[0]
    log_q = _log_softmax(np.asarray(others, dtype=np.float64))
    return np.maximum((np.exp(log_p)[None] * (log_p[None] - log_q)).sum(axis=1), 0.0)


def _log_softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def quadratic_regime(
    forward: Forward,
    sample: np.ndarray,
    eigenvector: np.ndarray,
    lambda_max: float,
    t: np.ndarray | None = None,
    tolerance: float = 0.1,
) -> QuadraticCheck:
    """KL(p(x) || p(x +- t v)) against 1/2 t^2 lambda_max for t on a geometric grid (forward runs only).

    ``eigenvector`` is normalised here; points are cast and clipped as applied (with an input
    range, clipping near its edge can end the regime early, as it should: that is the model seen).
    """
    if not (np.isfinite(lambda_max) and lambda_max > 0):
        raise ValueError(f"the quadratic check needs lambda_max > 0, got {lambda_max}")
    direction = np.asarray(eigenvector, dtype=np.float64).ravel()
    direction = direction / np.linalg.norm(direction)
    grid = np.geomspace(1e-3, 10.0, 25) / np.sqrt(lambda_max) if t is None else np.asarray(t, dtype=np.float64)
    origin = forward.applied(np.asarray(sample)[None])[0]
    base = origin.astype(np.float64).ravel()
    steps = np.concatenate([grid, -grid])[:, None] * direction[None]
    points = forward.applied((base[None] + steps).reshape(-1, *origin.shape))
    logits = forward.logits(np.concatenate([origin[None], points]))
    kl = kl_divergence(logits[0], logits[1:])
    plus, minus = kl[: grid.size], kl[grid.size :]
    quadratic = 0.5 * grid**2 * lambda_max
    agree = (np.abs(plus / quadratic - 1) <= tolerance) & (np.abs(minus / quadratic - 1) <= tolerance)
    count = grid.size if agree.all() else int(np.argmin(agree))
    return QuadraticCheck(
        lambda_max=float(lambda_max),
        t=tuple(float(v) for v in grid),
        kl_plus=tuple(float(v) for v in plus),
        kl_minus=tuple(float(v) for v in minus),
        quadratic=tuple(float(v) for v in quadratic),
        tolerance=tolerance,
        radius=float(grid[count - 1]) if count > 0 else None,
    )
