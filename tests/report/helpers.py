"""Typed results for verdict and check tests, and real audits of sample models for report tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.fisher.result import SpectralResult
from fimaudit.results import AuditResult, Bound, SampleResult
from fimaudit.sanity import GRADIENT_CHECK_TOLERANCE, AdjointOutcome, DirectionOutcomes, GradientCheck
from fimaudit.statistics import summarise
from fimaudit.verdict import Judgement, judge
from tests.conftest import SAMPLES

MLP = str(SAMPLES / "mlp.onnx")
DIGITS = str(SAMPLES / "digits_test.npy")


def sample(index: int, value: float, kind: str = "exact", interval: list[float] | None = None,
           diagnostics: dict[str, Any] | None = None, bound: float | None = None) -> SampleResult:
    """One audited sample as the audit returns it (``bound``: the value of its certified bound)."""
    result = SpectralResult(value=value, kind=kind, interval=None if interval is None else tuple(interval),
                            confidence=0.95 if interval else None, trace=value * 1.1, model_evaluations=10,
                            diagnostics=dict(diagnostics or {}))
    return SampleResult(index, result, 0.9, index % 3, np.zeros(3), None if bound is None else Bound(bound))


def outcomes(status: str, directions: int = 16) -> DirectionOutcomes:
    """One sample's finite-difference comparison that ends ``status`` (passed, failed, not_decided)."""
    errors = np.full(directions, 1.0 if status == "failed" else 1e-5)
    bounds = np.full(directions, 1.0 if status == "not_decided" else 0.0)
    return DirectionOutcomes(errors, bounds, np.full(directions, 1e-3), GRADIENT_CHECK_TOLERANCE)


def gradient_check(fd: str = "passed", adjoint: str | None = "passed", samples: int = 3) -> GradientCheck:
    """A gradient check whose finite-difference part ends ``fd`` and whose adjoint part ends
    ``adjoint`` (None: not applicable)."""
    pairs = [] if adjoint is None else [AdjointOutcome(np.array([0.3 if adjoint == "failed" else 4e-8]), 2.4e-4)] * samples
    return GradientCheck(list(range(samples)), 16, GRADIENT_CHECK_TOLERANCE, [outcomes(fd)] * samples, pairs,
                         "" if adjoint is not None else "no forward-mode graph")


def judged(samples: list[SampleResult], threshold: float | None = None, statistic: str = "max", gradients: str = "fd",
           check: GradientCheck | None = None, bound: float | None = None) -> Judgement:
    """The checks and verdict of an audit with these samples (``bound``: the model-wide bound's value)."""
    summary = summarise(np.array([s.value for s in samples]))
    return judge(samples, summary, None if bound is None else Bound(bound), check, gradients, threshold, statistic)


def audit_mlp(samples: int = 6, **options: Any) -> AuditResult:
    """A real audit of the sample MLP on the digits (finite differences: fast and deterministic)."""
    return run_audit(AuditConfig(model_path=MLP, data_path=DIGITS, samples=samples, gradients="fd", **options))


def rejudged(result: AuditResult, **changes: Any) -> AuditResult:
    """``result`` with ``changes`` (a bound, a gradient check, ...) and its checks and verdict decided again."""
    changed = dataclasses.replace(result, **changes)
    judgement = judge(changed.samples, changed.summary, changed.bound, changed.gradient_check, changed.gradients,
                      changed.config.threshold, changed.config.statistic)
    return dataclasses.replace(changed, checks=judgement.checks, verdict=judgement.verdict)
