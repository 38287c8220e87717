"""PGD success rates at fixed radii (Madry et al., 2018), l2 and l-inf, with random restarts.

Each restart starts at a uniform random point of the eps-ball (clipped to the input range) and
takes ``steps`` projected ascent steps on the margin max_{k != c} z_k - z_c (its gradient is one
vector-Jacobian product of the logit difference e_k - e_c): sign steps of 2.5 eps / steps for
l-inf, normalised steps of the same length for l2. Success at a radius is only what a forward run
confirms: the applied example (cast, clipped) is re-run, predicts another class, and its applied
perturbation has norm <= eps. A verified example found at a smaller radius also lies in every
larger ball, so it counts there too: the success rate is monotone in eps by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fimaudit.attacks.forward import Forward
from fimaudit.attacks.meter import EvaluationMeter
from fimaudit.attacks.result import Norm
from fimaudit.gradients import InputJacobian


@dataclass(frozen=True)
class PgdOutcome:
    """PGD on one sample: per radius, whether a verified example was found, and the smallest one's norm."""

    radii: tuple[float, ...]
    success: tuple[bool, ...]
    #: The smallest applied norm of a verified example (None: none found at any radius).
    smallest_norm: float | None
    evaluations: int


def _random_start(rng: np.random.Generator, size: int, eps: float, norm: Norm) -> np.ndarray:
    """A uniform random point of the eps-ball in R^size."""
    if norm == "inf":
        return rng.uniform(-eps, eps, size)
    direction = rng.standard_normal(size)
    direction /= max(np.linalg.norm(direction), np.finfo(np.float64).tiny)
    return direction * eps * rng.uniform() ** (1.0 / size)


def _project(delta: np.ndarray, eps: float, norm: Norm) -> np.ndarray:
    """``delta`` projected onto the eps-ball."""
    if norm == "inf":
        return np.clip(delta, -eps, eps)
    length = np.linalg.norm(delta)
    return delta * (eps / length) if length > eps else delta


def _ascent_direction(gradient: np.ndarray, norm: Norm) -> np.ndarray:
    """The steepest-ascent direction of unit norm for ``gradient``."""
    if norm == "inf":
        return np.sign(gradient)
    length = np.linalg.norm(gradient)
    return gradient / length if length > 0 else gradient


def pgd_at_radii(
    source: InputJacobian,
    forward: Forward,
    sample: np.ndarray,
    radii: Sequence[float],
    norm: Norm,
    rng: np.random.Generator,
    restarts: int = 3,
    steps: int = 20,
) -> PgdOutcome:
    """Verified PGD success of ``sample`` at each radius (ascending order not required)."""
    if any(not np.isfinite(eps) or eps <= 0 for eps in radii):
        raise ValueError(f"attack radii must be positive and finite, got {list(radii)}")
    meter = EvaluationMeter(forward.runner, source)
    origin = forward.applied(np.asarray(sample)[None])[0]
    base = origin.astype(np.float64).ravel()
    logits = forward.logits(origin[None])[0]
    original = int(np.argmax(logits))
    found: list[float] = []  # applied norms of verified examples
    for eps in sorted(set(float(r) for r in radii)):
        if any(n <= eps for n in found):
            continue  # an example already found lies in this ball
        step = 2.5 * eps / steps
        # Projected inside the ball by the rounding of the cast, so the applied perturbation stays within eps.
        spacing = float(np.spacing(forward.dtype.type(np.abs(base).max() + eps)))
        inner = eps - spacing * (1.0 if norm == "inf" else np.sqrt(base.size))
        if inner <= 0:
            continue  # the model's float type cannot resolve this radius around the sample
        candidates = []
        for _ in range(restarts):
            delta = _random_start(rng, base.size, inner, norm)
            for _ in range(steps):
                point = forward.applied((base + delta).reshape(origin.shape))[None]
                values = forward.logits(point)[0]
                if int(np.argmax(values)) != original:
                    break
                rival = int(np.argmax(np.where(np.arange(values.size) == original, -np.inf, values)))
                cotangent = np.zeros((1, values.size), dtype=np.float64)
                cotangent[0, rival], cotangent[0, original] = 1.0, -1.0
                gradient = np.asarray(source.vjp(point[0], cotangent)[0], dtype=np.float64)
                delta = _project(delta + step * _ascent_direction(gradient, norm), inner, norm)
            candidates.append((base + delta).reshape(origin.shape))
        check = forward.verify(origin, np.stack(candidates), original, norm)
        found += [float(n) for n in check.norms[check.adversarial]]
    ordered = tuple(float(r) for r in radii)
    success = tuple(any(n <= eps for n in found) for eps in ordered)
    return PgdOutcome(ordered, success, min(found) if found else None, meter.spent)


def success_rates(outcomes: Sequence[PgdOutcome]) -> dict[float, float]:
    """The fraction of samples with a verified example at each radius (the robust-accuracy table's complement)."""
    if not outcomes:
        return {}
    radii = outcomes[0].radii
    return {eps: float(np.mean([o.success[i] for o in outcomes])) for i, eps in enumerate(radii)}

