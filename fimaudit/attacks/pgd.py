"""PGD success rates at fixed radii (Madry et al., 2018), l2 and l-inf, with random restarts and a step schedule.

Per radius, ``restarts`` runs: the first ascends the margin max_{k != c} z_k - z_c against the
current runner-up, the others the margin z_k - z_c of one fixed rival each (the classes closest in
logit, in turn: multi-targeted PGD, Gowal et al. 2019). The first two start at the sample itself,
the others at a uniform random point of the eps-ball. Each run takes ``steps`` projected ascent
steps (the margin's gradient is one vector-Jacobian product of e_k - e_c): sign steps for l-inf,
normalised steps for l2, of length eps / 4 decaying on a cosine schedule to a hundredth of that
(large steps reach the sphere where the boundary is crossed, small ones follow it there). With an
input range, gradient components that push a coordinate held at a bound outward are dropped (as
DeepFool does) and each iterate is clipped into the range, then projected into the ball.

Measured on the sample MLP (32 digits, [0, 1]): the earlier PGD (a constant step of 2.5 eps / steps,
random starts, the runner-up only) found no l2 example at 1.05 times DeepFool's epsilon_min on
any of them; the box-aware steps left 4 l2 and 3 l-inf misses, whatever the step count (a local
maximum of the runner-up margin); the targeted runs none.

Success at a radius is only what a forward run confirms: the applied example (cast, clipped) is
re-run, predicts another class, and its applied perturbation has norm <= eps. A verified example
found at a smaller radius also lies in every larger ball, so it counts there too: the success
rate is monotone in eps by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fimaudit.attacks.forward import Forward, InputRange
from fimaudit.attacks.meter import EvaluationMeter
from fimaudit.attacks.result import Norm
from fimaudit.gradients import InputJacobian
from fimaudit.results import PgdOutcome


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


def _inward(gradient: np.ndarray, point: np.ndarray, limits: InputRange) -> np.ndarray:
    """``gradient`` without the components that would push a coordinate at a bound of the range outside it."""
    low, high = point <= limits.low, point >= limits.high
    return np.where((low & (gradient < 0)) | (high & (gradient > 0)), 0.0, gradient)


def _ascent_direction(gradient: np.ndarray, norm: Norm) -> np.ndarray:
    """The steepest-ascent direction of unit norm for ``gradient``."""
    if norm == "inf":
        return np.sign(gradient)
    length = np.linalg.norm(gradient)
    return gradient / length if length > 0 else gradient


def _targets(logits: np.ndarray, original: int, restarts: int) -> list[int | None]:
    """The class each run pushes toward: None (the current runner-up) first, then the runners-up in turn.

    Chasing only the current runner-up ends in a local maximum of the margin when the nearest
    boundary is another class's (measured on the sample MLP); the targeted runs cover the
    classes closest in logit, cycling when there are fewer than ``restarts - 1`` of them.
    """
    rivals = [int(k) for k in np.argsort(-logits) if k != original]
    if not rivals:
        return [None] * restarts
    return [None] + [rivals[i % len(rivals)] for i in range(restarts - 1)]


def step_schedule(eps: float, steps: int) -> np.ndarray:
    """Step lengths of one run: eps / 4 decaying on a cosine to eps / 400."""
    start, end = eps / 4.0, eps / 400.0
    phase = np.arange(steps) / max(steps - 1, 1)
    return end + (start - end) * 0.5 * (1.0 + np.cos(np.pi * phase))


def pgd_at_radii(
    source: InputJacobian,
    forward: Forward,
    sample: np.ndarray,
    radii: Sequence[float],
    norm: Norm,
    rng: np.random.Generator,
    restarts: int = 4,
    steps: int = 40,
) -> PgdOutcome:
    """Verified PGD success of ``sample`` at each radius (ascending order not required).

    ``restarts`` runs per radius (untargeted, then one targeted run per runner-up class; the first
    two from the sample, the others from random points), each of ``steps`` steps; a run stops at
    its first iterate of another class, and the radius at its first verified example.
    """
    if any(not np.isfinite(eps) or eps <= 0 for eps in radii):
        raise ValueError(f"attack radii must be positive and finite, got {list(radii)}")
    if restarts < 1 or steps < 1:
        raise ValueError(f"PGD needs at least one restart and one step, got {restarts} and {steps}")
    meter = EvaluationMeter(forward.runner, source)
    origin = forward.applied(np.asarray(sample)[None])[0]
    base = origin.astype(np.float64).ravel()
    logits = forward.logits(origin[None])[0]
    original = int(np.argmax(logits))
    found: list[float] = []  # applied norms of verified examples
    for eps in sorted(set(float(r) for r in radii)):
        if any(n <= eps for n in found):
            continue  # an example already found lies in this ball
        # Projected inside the ball by the rounding of the cast, so the applied perturbation stays within eps.
        spacing = float(np.spacing(forward.dtype.type(np.abs(base).max() + eps)))
        inner = eps - spacing * (1.0 if norm == "inf" else np.sqrt(base.size))
        if inner <= 0:
            continue  # the model's float type cannot resolve this radius around the sample
        schedule = step_schedule(inner, steps)
        candidates = []
        for restart, target in enumerate(_targets(logits, original, restarts)):
            delta = np.zeros(base.size) if restart < 2 else _random_start(rng, base.size, inner, norm)
            for step in schedule:
                point = forward.applied((base + delta).reshape(origin.shape))[None]
                values = forward.logits(point)[0]
                if int(np.argmax(values)) != original:
                    break
                rival = target if target is not None else int(
                    np.argmax(np.where(np.arange(values.size) == original, -np.inf, values))
                )
                cotangent = np.zeros((1, values.size), dtype=np.float64)
                cotangent[0, rival], cotangent[0, original] = 1.0, -1.0
                gradient = np.asarray(source.vjp(point[0], cotangent)[0], dtype=np.float64).ravel()
                if forward.input_range is not None:  # no length spent pushing coordinates held at a bound
                    gradient = _inward(gradient, base + delta, forward.input_range)
                delta = _project(delta + step * _ascent_direction(gradient, norm), inner, norm)
                if forward.input_range is not None:
                    # Into the box, then into the ball: scaling toward 0 keeps a point of the box in it.
                    delta = _project(forward.input_range.clip(base + delta) - base, inner, norm)
            candidates.append((base + delta).reshape(origin.shape))
            check = forward.verify(origin, candidates[-1][None], original, norm)
            if check.adversarial[0]:
                found.append(float(check.norms[0]))
                break  # one verified example decides this radius
    ordered = tuple(float(r) for r in radii)
    success = tuple(any(n <= eps for n in found) for eps in ordered)
    return PgdOutcome(ordered, success, min(found) if found else None, meter.spent)


def success_rates(outcomes: Sequence[PgdOutcome]) -> dict[float, float]:
    """The fraction of samples with a verified example at each radius (the robust-accuracy table's complement)."""
    if not outcomes:
        return {}
    radii = outcomes[0].radii
    return {eps: float(np.mean([o.success[i] for o in outcomes])) for i, eps in enumerate(radii)}

