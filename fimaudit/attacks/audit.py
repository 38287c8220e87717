"""``attack_audit``: per sample, lambda_max, a verified minimum-norm attack, PGD at fixed radii, the quadratic check.

Loaded, planned, prepared and differentiated as ``fimaudit jacobian`` is, by
``audit.prepare_jacobians``. Per sample: the dense K x d Jacobian gives the exact
lambda_max and its eigenvector (fisher/exact.py), DeepFool + bisection gives epsilon_min, PGD
gives success at each ``--attack-eps``, and the quadratic check gives the radius where lambda_max
describes the model. Over the samples: success rates per radius and the rank correlation of
lambda_max with 1 / epsilon_min. Every attack result is re-verified by ``runner.run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import fimaudit
from fimaudit.attacks.correlation import RankCorrelation, rank_correlation
from fimaudit.attacks.deepfool import DEFAULT_BUDGET, deepfool
from fimaudit.attacks.forward import Forward, InputRange
from fimaudit.attacks.pgd import PgdOutcome, pgd_at_radii, success_rates
from fimaudit.attacks.quadratic import QuadraticCheck, quadratic_regime
from fimaudit.attacks.result import AttackResult, Norm
from fimaudit.audit import prepare_jacobians
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.randomness import RandomStreams
from fimaudit.report.outputs import refuse_outputs_over
from fimaudit.report.writing import OutputSet, json_text
from fimaudit.resources import MemoryBudget
from fimaudit.runtime import DEFAULT_TIMEOUT_S

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleAttack:
    """One sample: its exact lambda_max, the minimum-norm attack, PGD and the quadratic check."""

    index: int
    lambda_max: float
    attack: AttackResult
    pgd: PgdOutcome | None
    quadratic: QuadraticCheck | None

    def to_dict(self) -> dict[str, Any]:
        """``samples[i]`` of the attack document."""
        return {
            "index": self.index,
            "lambda_max": self.lambda_max,
            "lambda_max_kind": "exact",
            "attack": self.attack.to_dict(),
            "pgd": None if self.pgd is None else {
                "radii": list(self.pgd.radii),
                "success": list(self.pgd.success),
                "evaluations": self.pgd.evaluations,
            },
            "quadratic": None if self.quadratic is None else self.quadratic.to_dict(),
        }


@dataclass(frozen=True)
class AttackAudit:
    """What ``attack_audit`` found on every sample, and the summary over them."""

    model_path: str
    norm: Norm
    gradients: str
    note: str
    samples: tuple[SampleAttack, ...]
    success_rate_by_eps: dict[float, float]
    correlation: RankCorrelation
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``samples[].attack`` and ``attack_summary`` (issue 11's contract)."""
        rates = [{"eps": eps, "success_rate": rate} for eps, rate in self.success_rate_by_eps.items()]
        radii = [s.quadratic.radius for s in self.samples if s.quadratic is not None]
        known = [r for r in radii if r is not None]
        return {
            "tool": {"name": "fimaudit", "version": fimaudit.__version__},
            "model": {"path": self.model_path},
            "method": {"norm": self.norm, "gradients": self.gradients, "note": self.note},
            "samples": [sample.to_dict() for sample in self.samples],
            "attack_summary": {
                "success_rate_by_eps": rates,
                **self.correlation.to_dict(),
                "quadratic_radius": {
                    "median": float(np.median(known)) if known else None,
                    "samples_without": len(radii) - len(known),
                },
                "verified": sum(s.attack.verified for s in self.samples),
                "seconds": self.seconds,
            },
        }

    def adversarial_array(self, like: np.ndarray) -> np.ndarray:
        """The verified examples in the data's layout, NaN rows where none was found (float32)."""
        out = np.full((len(self.samples), *like.shape[1:]), np.nan, dtype=np.float32)
        for row, sample in enumerate(self.samples):
            if sample.attack.example is not None:
                out[row] = sample.attack.example.reshape(like.shape[1:])
        return out


def attack_audit(
    model_path: str,
    data_path: str,
    norm: Norm = "2",
    radii: Sequence[float] = (),
    samples: int | None = None,
    seed: int = 0,
    input_range: InputRange | None = None,
    gradients: str = "auto",
    budget: int = DEFAULT_BUDGET,
    json_path: str | None = None,
    adversarial_path: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> AttackAudit:
    """Attack every sample of ``data_path`` on ``model_path``; write the JSON and examples when asked."""
    started = time.perf_counter()
    with OutputSet([json_path, adversarial_path], [model_path, data_path]) as outputs:
        outputs.check()
        ready = prepare_jacobians(
            model_path, data_path, gradients, samples, MemoryBudget.from_option(None), timeout,
            refuse_outputs_over(outputs),
        )
        prepared, data, choice = ready.prepared, ready.data, ready.choice
        if choice.kind == "fd":
            logger.warning("the attacks use finite-difference gradients (2 d evaluations per Jacobian): slower")
        result = attack_samples(
            choice.source, Forward(prepared.runner, choice.source.dtype, input_range), data.inputs,
            norm, radii, RandomStreams(seed), budget,
        )
        audit = AttackAudit(
            model_path=model_path,
            norm=norm,
            gradients=choice.kind,
            note=choice.reason,
            samples=tuple(result),
            success_rate_by_eps=success_rates([s.pgd for s in result if s.pgd is not None]),
            correlation=rank_correlation(
                [s.lambda_max for s in result], [s.attack.epsilon_min for s in result], RandomStreams(seed).data()
            ),
            seconds=time.perf_counter() - started,
        )
        if json_path:
            outputs.write(json_path, json_text(audit.to_dict()))
        if adversarial_path:
            staged = outputs.stage(adversarial_path)
            np.lib.format.write_array(staged, audit.adversarial_array(data.inputs), allow_pickle=False)
            staged.finish()
        outputs.commit()  # the model's files were added as inputs when it was loaded
    return audit


def attack_samples(
    source: Any,
    forward: Forward,
    inputs: np.ndarray,
    norm: Norm,
    radii: Sequence[float],
    streams: RandomStreams,
    budget: int = DEFAULT_BUDGET,
) -> list[SampleAttack]:
    """Every sample's lambda_max (exact, from the dense Jacobian), minimum-norm attack, PGD and quadratic check."""
    results = []
    for index in range(inputs.shape[0]):
        sample = forward.applied(inputs[index : index + 1])[0]
        jacobian = np.asarray(source.dense(sample[None])[0], dtype=np.float64)
        logits = forward.logits(sample[None])[0]
        spectral = exact_lambda_max(jacobian.reshape(logits.size, -1), logits)
        attack = deepfool(source, forward, sample, norm, budget=budget)
        rng = streams.sample(index)
        pgd = pgd_at_radii(source, forward, sample, radii, norm, rng) if radii else None
        quadratic = None
        if spectral.value > 0 and spectral.eigenvector is not None:
            # Unclipped: lambda_max describes the model function at x; clipping pixels that sit at a bound
            # would bend the direction away from v and end the regime at the first grid point (measured).
            unclipped = Forward(forward.runner, forward.dtype)
            quadratic = quadratic_regime(unclipped, sample, spectral.eigenvector, spectral.value)
        results.append(SampleAttack(index, float(spectral.value), attack, pgd, quadratic))
        logger.info("sample %d: lambda_max %.4g, epsilon_min %s", index, spectral.value, attack.epsilon_min)
    return results
