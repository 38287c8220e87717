"""The attack stage of an audit (``--attack``): one call after the per-sample estimator loop.

Per sample: the minimum-norm attack (DeepFool + bisection) gives a verified epsilon_min, PGD
gives verified success at each ``--attack-eps`` radius, and, for the samples whose top Fisher
eigenvector the audit kept (the most sensitive ones), the quadratic-regime check gives the radius
in which lambda_max describes the model. Over the samples: success rate and robust accuracy per
radius, and the rank correlation of the audit's lambda_max with 1 / epsilon_min (overall and per
predicted class). Every adversarial example is re-verified by ``runner.run``, the session the
audit measured lambda_max with.

When no gradient attack can run, the stage says so instead of reporting nothing: a model whose
scores are piecewise constant (tree ensembles, Binarizer) has zero gradients almost everywhere,
and a finite-difference Jacobian (2 d evaluations) larger than the attack budget is not started.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fimaudit.attacks.correlation import rank_correlation
from fimaudit.attacks.deepfool import DEFAULT_BUDGET, deepfool
from fimaudit.attacks.forward import Forward, InputRange
from fimaudit.attacks.pgd import pgd_at_radii
from fimaudit.attacks.quadratic import quadratic_regime
from fimaudit.errors import InputError
from fimaudit.gradients import InputJacobian
from fimaudit.randomness import RandomStreams
from fimaudit.results import AttackResult, AttackSummary, Norm, RadiusSuccess, SampleResult
from fimaudit.runtime import ModelRunner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackConfig:
    """What ``--attack`` asks for: the norm, PGD radii, the valid input range, budgets and the gate."""

    norm: Norm = "2"
    radii: tuple[float, ...] = ()
    input_range: InputRange | None = None
    #: Model evaluations one sample's minimum-norm attack may spend (--attack-budget).
    budget: int = DEFAULT_BUDGET
    #: --fail-robust-below: the robust accuracy every radius must reach (None: no gate).
    robust_below: float | None = None

    def __post_init__(self) -> None:
        """Refuse radii, budgets and gates that cannot mean anything, in one line."""
        if any(not (np.isfinite(eps) and eps > 0) for eps in self.radii):
            raise InputError(f"--attack-eps radii must be positive and finite, got {list(self.radii)}")
        if self.budget <= 0:
            raise InputError(f"--attack-budget must be a positive number of evaluations, got {self.budget}")
        if self.robust_below is not None:
            if not 0 <= self.robust_below <= 1:
                raise InputError(f"--fail-robust-below is a fraction in [0, 1], got {self.robust_below}")
            if not self.radii:
                raise InputError("--fail-robust-below needs --attack-eps: robust accuracy is measured at those radii")


def not_run_reason(gradients: str, flat_note: str, sample_size: int, budget: int) -> str | None:
    """Why no gradient attack can run on this model (None: it can)."""
    if flat_note:
        return f"not run: {flat_note} (gradient attacks see zero gradients; no black-box attack is implemented)"
    if gradients == "fd" and 2 * sample_size + 1 > budget:
        return (f"not run: a finite-difference Jacobian costs 2 d + 1 = {2 * sample_size + 1} evaluations, more than "
                f"--attack-budget {budget} (no gradient graph; raise the budget to attack with finite differences)")
    return None


def attack_stage(
    config: AttackConfig,
    source: InputJacobian,
    runner: ModelRunner,
    inputs: np.ndarray,
    samples: Sequence[SampleResult],
    gradients: str,
    seed: int,
    flat_note: str = "",
) -> tuple[list[SampleResult], AttackSummary]:
    """Attack every audited sample; return the samples with their ``attack`` and the summary.

    ``samples`` are the audit's results in the order of ``inputs``; their lambda_max (whatever
    the estimator made of it: exact, estimate, bound) is what is correlated, and their kept
    eigenvectors are the directions of the quadratic check.
    """
    started = time.perf_counter()
    forward = Forward(runner, source.dtype, config.input_range)
    sample_size = int(np.prod(inputs.shape[1:], dtype=np.int64))
    reason = not_run_reason(gradients, flat_note, sample_size, config.budget)
    if gradients == "fd" and reason is None:
        logger.warning("the attacks use finite-difference gradients (2 d + 1 evaluations per Jacobian): slower")
    streams = RandomStreams(seed)
    attacked = []
    for position, sample in enumerate(samples):
        row = inputs[position]
        if reason is not None:
            result = AttackResult(config.norm, None, False, "not run", 0, None, sample.predicted_class, reason=reason)
        else:
            result = _attack_one(config, source, forward, row, sample, streams.attack(sample.index), gradients)
        attacked.append(dataclasses.replace(sample, attack=result))
        logger.info("sample %d: lambda_max %.4g, epsilon_min %s", sample.index, sample.value, result.epsilon_min)
    summary = summarise_attacks(config, attacked, gradients, streams, reason, time.perf_counter() - started)
    return attacked, summary


def _attack_one(
    config: AttackConfig, source: InputJacobian, forward: Forward, row: np.ndarray, sample: SampleResult,
    rng: np.random.Generator, gradients: str,
) -> AttackResult:
    """The minimum-norm attack, PGD at the radii, and the quadratic check on one sample."""
    result = deepfool(source, forward, row, config.norm, budget=config.budget)
    if gradients == "fd":
        result = dataclasses.replace(result, method=f"{result.method} (finite-difference gradients)")
    pgd = pgd_at_radii(source, forward, row, config.radii, config.norm, rng) if config.radii else None
    quadratic = None
    vector = sample.result.eigenvector
    if vector is not None and sample.value > 0:
        # Unclipped: lambda_max describes the model function at x; clipping pixels at a bound would
        # bend the direction away from v and end the regime at the first grid point (measured).
        quadratic = quadratic_regime(Forward(forward.runner, forward.dtype), row, vector, sample.value)
    return dataclasses.replace(result, pgd=pgd, quadratic=quadratic)


def success_by_radius(results: Sequence[AttackResult], radii: Sequence[float]) -> tuple[RadiusSuccess, ...]:
    """Per radius: the fraction of samples with a verified example of applied norm <= eps.

    A sample counts when PGD verified one at this radius or the minimum-norm attack's epsilon_min
    is <= eps (the same verified example lies in the ball): both are forward-run evidence.
    """
    rows = []
    for position, eps in enumerate(radii):
        pgd = [r.pgd is not None and r.pgd.success[position] for r in results]
        found = [r.epsilon_min is not None and r.epsilon_min <= eps for r in results]
        either = [a or b for a, b in zip(pgd, found, strict=True)]
        count = len(results)
        rows.append(RadiusSuccess(
            eps=float(eps),
            success_rate=float(np.mean(either)) if count else 0.0,
            pgd_success_rate=float(np.mean(pgd)) if count else 0.0,
            samples=count,
        ))
    return tuple(rows)


def summarise_attacks(
    config: AttackConfig,
    samples: Sequence[SampleResult],
    gradients: str,
    streams: RandomStreams,
    reason: str | None,
    seconds: float,
) -> AttackSummary:
    """The attack summary over ``samples`` (each carrying its ``attack``)."""
    results = [s.attack for s in samples if s.attack is not None]
    lambdas = [s.value for s in samples]
    epsilons = [r.epsilon_min for r in results]
    kinds = sorted({s.kind for s in samples})
    correlation = per_class = None
    if reason is None:
        correlation = rank_correlation(lambdas, epsilons, streams.attack_bootstrap())
        classes = sorted({s.predicted_class for s in samples})
        per_class = tuple(
            (label, rank_correlation(
                [s.value for s in samples if s.predicted_class == label],
                [s.attack.epsilon_min if s.attack else None for s in samples if s.predicted_class == label],
                streams.attack_bootstrap(label + 1),
            ))
            for label in classes
        )
    checks = [r.quadratic for r in results if r.quadratic is not None]
    radii = [c.radius for c in checks if c.radius is not None]
    return AttackSummary(
        status="not_run" if reason is not None else "run",
        reason=reason,
        norm=config.norm,
        gradients=gradients,
        input_range=None if config.input_range is None else (config.input_range.low, config.input_range.high),
        budget=config.budget,
        attempted=len(results),
        verified=sum(r.verified for r in results),
        success_rate_by_eps=success_by_radius(results, config.radii) if reason is None else (),
        correlation=correlation,
        per_class=per_class or (),
        lambda_kind=", ".join(kinds),
        quadratic_radius=float(np.median(radii)) if radii else None,
        quadratic_checked=len(checks),
        quadratic_without=len(checks) - len(radii),
        seconds=seconds,
        robust_below=config.robust_below,
    )


def adversarial_rows(samples: Sequence[SampleResult], like: np.ndarray) -> np.ndarray:
    """The verified examples in the layout of ``like`` (the audited inputs), NaN rows where none was found.

    Float inputs keep their dtype (a float64 model's examples stay exact); others become float32.
    """
    dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.dtype(np.float32)
    out = np.full((len(samples), *like.shape[1:]), np.nan, dtype=dtype)
    for row, sample in enumerate(samples):
        if sample.attack is not None and sample.attack.example is not None:
            out[row] = sample.attack.example.reshape(like.shape[1:])
    return out

