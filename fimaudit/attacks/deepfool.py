"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016) in l2 and l-inf, then a minimum-norm refinement.

DeepFool linearises the logits z at the current point: with w_k = grad z_k - grad z_c and
f_k = z_k - z_c for the original class c, the nearest linearised boundary is the class l
minimising |f_l| / ||w_l||_* (the dual norm: l2 for l2, l1 for l-inf), and the step onto it is
|f_l| w_l / ||w_l||_2^2 (l2) or |f_l| sign(w_l) / ||w_l||_1 (l-inf). The steps accumulate into
r; each iterate x0 + (1 + overshoot) r is clipped to the input range, cast to the model's input
type and run forward; the attack stops at the first iterate of another class, or when its
evaluation budget is spent. Each step needs the K x d Jacobian (``source.dense``).

``refine_along_ray`` then shrinks the found perturbation delta by forward runs only (and
``fmn.fmn_refine`` walks along the boundary from there, off the ray): the smallest
s in (0, 1] with x0 + s delta of another class, found on a grid of scales per run and narrowed
between the last clean and the first adversarial scale (a batched bisection). On a linear model
DeepFool's first step already points at the nearest boundary, so the refinement reaches the
closed-form minimum to the precision of the grid.
"""

from __future__ import annotations

import logging

import numpy as np

from fimaudit.attacks.fmn import fmn_refine
from fimaudit.attacks.forward import Forward
from fimaudit.attacks.meter import EvaluationMeter
from fimaudit.attacks.result import AttackResult, Norm
from fimaudit.gradients import InputJacobian

logger = logging.getLogger(__name__)

#: Default model evaluations one sample's DeepFool may spend (gradients and forward runs).
DEFAULT_BUDGET = 2000
#: Default overshoot: each iterate is x0 + (1 + overshoot) r.
DEFAULT_OVERSHOOT = 0.02
#: Scales tried per forward run of the refinement.
REFINE_POINTS = 32
#: Classes (closest in logit) each given a targeted FMN run after the untargeted one.
FMN_TARGETS = 3
#: The refinement stops when the bracket of scales is narrower than this (relative).
REFINE_TOLERANCE = 1e-12


def _step(gaps: np.ndarray, normals: np.ndarray, norm: Norm) -> np.ndarray | None:
    """DeepFool's step onto the nearest linearised boundary; None when no class can be reached.

    ``gaps`` [K - 1] are f_k = z_k - z_c (<= 0), ``normals`` [K - 1, d] the w_k.
    """
    dual = np.abs(normals).sum(axis=1) if norm == "inf" else np.linalg.norm(normals, axis=1)
    reachable = dual > 0
    if not reachable.any():
        return None
    distances = np.full(gaps.shape, np.inf)
    distances[reachable] = np.abs(gaps[reachable]) / dual[reachable]
    nearest = int(np.argmin(distances))
    normal, size = normals[nearest], dual[nearest]
    if norm == "inf":
        return np.abs(gaps[nearest]) / size * np.sign(normal)
    return np.abs(gaps[nearest]) / size**2 * normal


def deepfool(
    source: InputJacobian,
    forward: Forward,
    sample: np.ndarray,
    norm: Norm = "2",
    overshoot: float = DEFAULT_OVERSHOOT,
    budget: int = DEFAULT_BUDGET,
    max_iterations: int = 50,
    refine: bool = True,
) -> AttackResult:
    """A verified minimum-norm adversarial example of ``sample`` by DeepFool (then refined).

    ``forward`` runs the same runner ``source`` differentiates and holds the input range.
    ``budget`` bounds the model evaluations of the DeepFool iterations (one more iteration is
    not started once it is spent); the refinement adds about 8 forward runs of ``REFINE_POINTS``
    rows (the bisection) and FMN runs (``refine_boundary``: forward runs and vector-Jacobian
    products, within a ``budget`` of their own: a finite-difference product costs 2 d + 1
    evaluations). The result is re-verified by a forward run whatever happened.
    """
    if overshoot < 0:
        raise ValueError(f"overshoot must be >= 0, got {overshoot}")
    meter = EvaluationMeter(forward.runner, source)
    origin = forward.applied(np.asarray(sample)[None])[0]
    logits = logits_at_origin = forward.logits(origin[None])[0]
    original = int(np.argmax(logits))
    others = np.array([k for k in range(logits.shape[0]) if k != original], dtype=np.int64)
    total = np.zeros(origin.size, dtype=np.float64)
    point = origin
    found: np.ndarray | None = None
    reason = "the evaluation budget was spent before the class changed"
    for _ in range(max_iterations):
        if meter.spent >= budget:
            break
        jacobian = np.asarray(source.dense(point[None])[0], dtype=np.float64).reshape(logits.shape[0], -1)
        normals = jacobian[others] - jacobian[original]
        if forward.input_range is not None:  # no step out of the range: coordinates at a bound stay there
            flat = point.astype(np.float64).ravel()[None]
            low, high = flat <= forward.input_range.low, flat >= forward.input_range.high
            normals = np.where((low & (normals < 0)) | (high & (normals > 0)), 0.0, normals)
        step = _step(logits[others] - logits[original], normals, norm)
        if step is None:
            reason = "the logits' differences have zero gradient: no direction changes the class"
            break
        total += step
        candidate = forward.applied((origin.astype(np.float64).ravel() + (1 + overshoot) * total).reshape(origin.shape))
        if np.array_equal(candidate, point):
            reason = "the iterate stopped moving (the input range or the float type holds it)"
            break
        point = candidate
        logits = forward.logits(point[None])[0]
        if int(np.argmax(logits)) != original:
            found = point
            break
    else:
        reason = f"no class change within {max_iterations} iterations"
    method = "deepfool"
    if found is not None and refine:
        found = refine_along_ray(forward, origin, found, original)
        found = refine_boundary(source, forward, origin, found, original, logits_at_origin, norm, budget)
        method = "deepfool+bisection+fmn"
    return verified_result(forward, origin, found, original, norm, method, meter.spent, reason)


def refine_boundary(
    source: InputJacobian, forward: Forward, origin: np.ndarray, found: np.ndarray, original: int,
    logits: np.ndarray, norm: Norm, budget: int,
) -> np.ndarray:
    """FMN from the found example, then FMN targeted at each of the ``FMN_TARGETS`` classes closest in logit.

    The targeted runs start at the sample itself inside the ball of the best radius so far: on
    ReLU networks the nearest boundary can belong to another class than the one DeepFool
    crossed (measured on vgg_small: one digit of 16 came 31% closer this way). Together they
    spend at most ``budget`` model evaluations.
    """
    meter = EvaluationMeter(forward.runner, source)
    found = fmn_refine(source, forward, origin, found, original, norm, budget=budget)
    rivals = [int(k) for k in np.argsort(-logits) if k != original][:FMN_TARGETS]
    for target in rivals:
        if meter.spent >= budget:
            break
        found = fmn_refine(source, forward, origin, found, original, norm, budget=budget - meter.spent,
                           target=target, from_origin=True)
    return found


def refine_along_ray(forward: Forward, origin: np.ndarray, adversarial: np.ndarray, original: int) -> np.ndarray:
    """The adversarial point closest to ``origin`` on the segment to ``adversarial`` (forward runs only).

    Scales s in (0, 1] are tried ``REFINE_POINTS`` per run; the smallest adversarial one found
    and the largest clean one below it bracket the first crossing, which is narrowed until the
    bracket is below ``REFINE_TOLERANCE`` or the applied points stop changing. Returns the
    applied adversarial point (the model's input type) with the smallest scale found.
    """
    base = np.asarray(origin, dtype=np.float64)
    delta = np.asarray(adversarial, dtype=np.float64) - base
    low, high = 0.0, 1.0
    best = np.asarray(adversarial)
    while high - low > REFINE_TOLERANCE * high:
        scales = np.linspace(low, high, REFINE_POINTS + 2)[1:-1]
        points = forward.applied(base[None] + scales.reshape(-1, *([1] * base.ndim)) * delta[None])
        hits = forward.classes(points) != original
        if hits.any():
            first = int(np.argmax(hits))
            high, best = float(scales[first]), points[first]
            low = float(scales[first - 1]) if first > 0 else low
        else:
            low = float(scales[-1])
        if np.array_equal(points[0], points[-1]):  # the float type cannot resolve the bracket further
            break
    return best


def verified_result(
    forward: Forward,
    origin: np.ndarray,
    candidate: np.ndarray | None,
    original: int,
    norm: Norm,
    method: str,
    evaluations: int,
    reason: str | None,
) -> AttackResult:
    """The AttackResult a fresh forward run confirms for ``candidate`` (None: nothing was found)."""
    if candidate is None:
        return AttackResult(norm, None, False, method, evaluations, None, original, reason=reason)
    check = forward.verify(origin, candidate[None], original, norm)
    if not check.adversarial[0]:
        logger.warning("a candidate adversarial example did not change the class when re-run; not reported")
        return AttackResult(
            norm, None, False, method, evaluations + 1, None, original,
            reason="the candidate did not change the class when re-run",
        )
    return AttackResult(
        norm=norm,
        epsilon_min=float(check.norms[0]),
        verified=True,
        method=method,
        evaluations=evaluations + 1,
        adversarial_class=int(check.classes[0]),
        original_class=original,
        example=check.applied[0],
    )
