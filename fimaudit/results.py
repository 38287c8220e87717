"""The typed results of an audit: what the domain decides on and the report serialises.

Every class here is a frozen dataclass; the JSON document (report/document.py) is made from them
by their ``to_dict`` and nowhere else, and the field names of those dicts are the JSON contract
(README, "The JSON document"). Decisions (fimaudit/verdict.py) read these types, never the JSON.

Room is left for the results still to come (a local ``Certificate`` over an eps-ball, an
``AttackResult`` re-verified by a forward run): each gets a frozen dataclass here with a ``kind``
from :data:`Kind` and a ``to_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fimaudit.fisher.result import SpectralResult
from fimaudit.statistics import Summary

if TYPE_CHECKING:  # the audit's own inputs, kept with its result for the report
    from fimaudit.audit import AuditConfig, PreparedModel
    from fimaudit.data import AuditData
    from fimaudit.sanity import GradientCheck

#: What a reported number is (CONVENTIONS.md, "Guarantees").
Kind = Literal["exact", "estimate", "lower_bound", "upper_bound", "certified_upper_bound"]
#: Outcome of a sanity check: ``not_decided`` ran but could not tell (no evidence either way).
CheckStatus = Literal["passed", "failed", "not_decided", "not_computed", "not_applicable"]
#: Outcome of the gate (``--fail-above``).
VerdictStatus = Literal["pass", "fail", "inconclusive", "no_threshold"]


@dataclass(frozen=True)
class Bound:
    """A certified upper bound on lambda_max over a stated set (all inputs, or one sample).

    ``value`` is None when no bound could be certified (``details["reason"]`` says why);
    ``details`` is the JSON-ready evidence (per-layer gains, the head, the statement of the set).
    """

    value: float | None
    kind: Kind = "upper_bound"
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """Why no bound could be certified (None when one was)."""
        return self.details.get("reason")

    def with_details(self, **more: Any) -> Bound:
        """The same bound with more evidence attached."""
        return Bound(self.value, self.kind, {**self.details, **more})

    def to_dict(self) -> dict[str, Any]:
        """The bound as JSON: value, kind and details."""
        return {"value": self.value, "kind": self.kind, **self.details}


@dataclass(frozen=True)
class SampleResult:
    """The audit of one input sample: its lambda_max (with what it is), prediction and bound."""

    index: int
    result: SpectralResult
    top_prob: float
    predicted_class: int
    logits: np.ndarray
    #: Certified upper bound on this sample's lambda_max (fimaudit/bounds); None when not computed.
    bound: Bound | None = None

    @property
    def value(self) -> float:
        """The sample's lambda_max as the estimator gave it."""
        return float(self.result.value)

    @property
    def kind(self) -> str:
        """What the value is (exact, estimate, lower_bound, ...)."""
        return self.result.kind

    @property
    def interval(self) -> tuple[float, float] | None:
        """The estimate's interval (None for exact values and bounds)."""
        return self.result.interval

    @property
    def converged(self) -> bool | None:
        """Whether an iterative estimator converged; None when it did not say (or nothing iterates)."""
        return self.result.diagnostics.get("converged")

    def to_dict(self) -> dict[str, Any]:
        """The sample as JSON (the report's ``samples`` entries)."""
        result = self.result
        return {
            "index": self.index,
            "lambda_max": float(result.value),
            "kind": result.kind,
            "interval": list(result.interval) if result.interval is not None else None,
            "confidence": result.confidence,
            "trace": None if result.trace is None else float(result.trace),
            "top_prob": self.top_prob,
            "predicted_class": self.predicted_class,
            "model_evaluations": result.model_evaluations,
            "matvecs": result.matvecs,
            "seconds": result.seconds,
            "diagnostics": result.diagnostics,
            "bound": None if self.bound is None else self.bound.to_dict(),
        }


@dataclass(frozen=True)
class Check:
    """One sanity check of an audit: ``name`` (stable id), ``title`` (display), status, detail."""

    name: str
    title: str
    status: CheckStatus
    detail: str
    #: How a sentence names the check ("the gradient check failed").
    subject: str = field(compare=False, default="")

    def to_dict(self) -> dict[str, str]:
        """The check as JSON."""
        return {"name": self.name, "title": self.title, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    """The gate: ``statistic`` of lambda_max against ``threshold``, three ways and with the reason.

    ``interval`` is the statistic's possible range given the samples' intervals and bounds (None
    when every value is exact; its top None when unbounded). Only ``pass`` and ``no_threshold``
    pass: a CI job exits 1 on ``fail`` and on ``inconclusive``.
    """

    status: VerdictStatus
    threshold: float | None
    statistic: str
    value: float
    interval: tuple[float, float | None] | None
    reason: str

    @property
    def passed(self) -> bool:
        """Whether the audit passes the gate: a pass, or no threshold to fail."""
        return self.status in ("pass", "no_threshold")

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON."""
        return {
            "threshold": self.threshold,
            "statistic": self.statistic,
            "value": self.value,
            "interval": None if self.interval is None else list(self.interval),
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class AuditResult:
    """One audit: its inputs (config, model, data), per-sample results, summary, checks, verdict."""

    config: AuditConfig
    prepared: PreparedModel
    data: AuditData
    gradients: str
    gradients_note: str
    samples: tuple[SampleResult, ...]
    summary: Summary
    checks: tuple[Check, ...]
    verdict: Verdict
    seconds: float
    model_evaluations: int
    environment: dict[str, str]
    started_at: str
    architecture: dict[str, Any] = field(default_factory=lambda: {"family": "unknown"})
    bound: Bound | None = None
    # Settings of the gradient source that decide its accuracy (e.g. the finite-difference step).
    gradient_settings: dict[str, Any] = field(default_factory=dict)
    #: Subnormal weights found: {"count", "total", "flushed"} (flushed: the audit zeroed them).
    subnormal_weights: dict[str, Any] = field(default_factory=dict)
    # Graph gradients against finite differences on a few samples (None with fd gradients).
    gradient_check: GradientCheck | None = None
