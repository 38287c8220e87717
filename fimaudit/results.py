"""The typed results of an audit: what the domain decides on and the report serialises.

Every class here is a frozen dataclass; the JSON document (report/document.py) is made from them
by their ``to_dict`` and nowhere else, and the field names of those dicts are the JSON contract
(README, "The JSON document"). Decisions (fimaudit/verdict.py) read these types, never the JSON.

Room is left for the results still to come (a local ``Certificate`` over an eps-ball): each gets
a frozen dataclass here with a ``kind`` from :data:`Kind` and a ``to_dict``. The attack results
(``AttackResult`` re-verified by a forward run, ``AttackSummary``) are at the end of the file;
this module imports nothing from the stages that fill it, so fimaudit/attacks can build them.
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
    #: The attacks on this sample (fimaudit/attacks/stage.py, ``--attack``); None when not run.
    attack: AttackResult | None = None
    #: The sample's true class when the data has labels (image folders, a CSV list, --labels).
    true_class: int | None = None
    #: lambda_max in each input space measured ("model", and "pixel" with a preprocessing spec);
    #: ``result`` is the one in ``space``, the space the verdict reads (``--space``).
    spaces: Mapping[str, SpectralResult] = field(default_factory=dict)
    space: str = "model"
    #: Local certificates B(x, eps) over eps-balls around this sample (fimaudit/certify, ``--certify``).
    certificates: tuple[Certificate, ...] = ()
    #: The largest eps with B(x, eps) <= --fail-above (``--certify`` with a threshold); None: not computed.
    certified_radius: float | None = None

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
            "attack": None if self.attack is None else self.attack.to_dict(),
            "certificates": [certificate.to_dict() for certificate in self.certificates],
            "certified_radius": self.certified_radius,
            "space": self.space,
            "lambda_max_by_space": {
                name: {"lambda_max": float(r.value), "kind": r.kind,
                       "interval": list(r.interval) if r.interval is not None else None}
                for name, r in self.spaces.items()
            },
            "true_class": self.true_class,
            "correct": None if self.true_class is None else self.predicted_class == self.true_class,
        }


@dataclass(frozen=True)
class LabelSummary:
    """With true labels: accuracy, lambda_max of correct vs misclassified samples, and by true class.

    Statistics are of the verdict's space (``space``); computed by ``fimaudit.labelled``.
    """

    count: int
    accuracy: float
    space: str
    correct: Mapping[str, Any]
    misclassified: Mapping[str, Any]
    by_true_class: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON (the document's ``labels``)."""
        return {
            "count": self.count, "accuracy": self.accuracy, "space": self.space,
            "correct": dict(self.correct), "misclassified": dict(self.misclassified),
            "by_true_class": [dict(entry) for entry in self.by_true_class],
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
    #: The attack stage's summary over the samples (``--attack``); None when not run.
    attack: AttackSummary | None = None
    #: What the certificates (``--certify``) hold over, and what they do not cover; None when not run.
    certification: Certification | None = None

    @property
    def labels(self) -> LabelSummary | None:
        """Accuracy and lambda_max by true class when the data has labels (fimaudit/labelled.py)."""
        from fimaudit.labelled import label_summary

        return label_summary(self.samples, getattr(self.data, "class_names", None))


# ---------------------------------------------------------------------------------------------
# Local certificates (issue 10), filled by fimaudit/certify/stage.py


@dataclass(frozen=True)
class Certificate:
    """B(x, eps) >= lambda_max(F(x')) for every x' with ||x' - x||_norm <= eps (and in the input range).

    ``at_point`` is B's limit as eps -> 0: lambda_max(F(x)) from the float64 Jacobian the
    certificate starts from (the exact value, up to rounding), so value / at_point is the price of
    the neighbourhood.
    """

    epsilon: float
    norm: str
    value: float
    unstable_activations: int
    seconds: float
    at_point: float
    kind: Kind = "certified_upper_bound"

    def to_dict(self) -> dict[str, Any]:
        """The certificate as JSON."""
        return {
            "epsilon": self.epsilon, "norm": self.norm, "value": self.value, "kind": self.kind,
            "unstable_activations": self.unstable_activations, "seconds": self.seconds,
            "at_point": self.at_point,
        }


@dataclass(frozen=True)
class Certification:
    """The set the certificates hold over and the plain statement of what is and is not certified."""

    epsilons: tuple[float, ...]
    norm: str
    input_range: tuple[float, float] | None
    threshold: float | None
    radius_tolerance: float
    statement: str
    not_certified: str

    def to_dict(self) -> dict[str, Any]:
        """The certification settings and statements as JSON."""
        return {
            "epsilons": list(self.epsilons), "norm": self.norm,
            "input_range": None if self.input_range is None else list(self.input_range),
            "threshold": self.threshold, "radius_tolerance": self.radius_tolerance,
            "statement": self.statement, "not_certified": self.not_certified,
        }


# ---------------------------------------------------------------------------------------------
# Attacks (issue 11): what forward runs confirmed, filled by fimaudit/attacks/stage.py

#: The norms attacks measure perturbations in.
Norm = Literal["2", "inf"]


@dataclass(frozen=True)
class PgdOutcome:
    """PGD on one sample: per radius, whether a verified example was found, and the smallest one's norm."""

    radii: tuple[float, ...]
    success: tuple[bool, ...]
    #: The smallest applied norm of a verified example (None: none found at any radius).
    smallest_norm: float | None
    evaluations: int

    def to_dict(self) -> dict[str, Any]:
        """PGD's per-radius success on one sample as JSON."""
        return {
            "radii": list(self.radii),
            "success": list(self.success),
            "smallest_norm": self.smallest_norm,
            "evaluations": self.evaluations,
        }


@dataclass(frozen=True)
class QuadraticCheck:
    """KL along +-v against 1/2 t^2 lambda_max, and the radius where they agree within ``tolerance``."""

    lambda_max: float
    t: tuple[float, ...]
    kl_plus: tuple[float, ...]
    kl_minus: tuple[float, ...]
    quadratic: tuple[float, ...]
    tolerance: float
    #: The largest grid t up to which every smaller grid point agrees; None when the first does not.
    radius: float | None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON (the curve and its radius)."""
        return {
            "lambda_max": self.lambda_max,
            "t": list(self.t),
            "kl_plus": list(self.kl_plus),
            "kl_minus": list(self.kl_minus),
            "quadratic": list(self.quadratic),
            "tolerance": self.tolerance,
            "radius": self.radius,
        }


@dataclass(frozen=True)
class AttackResult:
    """The attacks on one sample, as forward runs confirmed them.

    The minimum-norm attack: ``norm`` of ``epsilon_min``; ``epsilon_min`` the norm of the
    perturbation actually applied (after the cast to the model's input type and clipping), None
    when no adversarial example was found; ``verified`` a plain forward run predicted
    ``adversarial_class`` there, not ``original_class``; ``method`` the attacks that ran (e.g.
    ``deepfool+bisection``, ``not run``); ``evaluations`` the model evaluations (input rows) paid,
    gradients included. ``epsilon_min`` is an upper bound on the distance to the nearest input of
    another class: a stronger attack can only lower it. ``pgd`` and ``quadratic`` are the
    sample's PGD at fixed radii and quadratic-regime check when they ran.
    """

    norm: Norm
    epsilon_min: float | None
    verified: bool
    method: str
    evaluations: int
    adversarial_class: int | None
    original_class: int
    #: The verified adversarial example (the model's input type), None when none was found.
    example: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: Why no verified example is reported (budget spent, the range stopped it, not run), else None.
    reason: str | None = None
    pgd: PgdOutcome | None = None
    quadratic: QuadraticCheck | None = None

    def __post_init__(self) -> None:
        """A reported epsilon always belongs to a verified example of another class."""
        if self.verified != (self.epsilon_min is not None):
            raise ValueError("epsilon_min is reported exactly when the example is verified")
        if self.verified and self.adversarial_class == self.original_class:
            raise ValueError("a verified adversarial example predicts another class")

    @property
    def kind(self) -> Kind:
        """What ``epsilon_min`` is: an upper bound on the true minimum adversarial distance."""
        return "upper_bound"

    def to_dict(self) -> dict[str, Any]:
        """The JSON record ``samples[].attack``: the contract fields of issue 11, then context."""
        return {
            "norm": self.norm,
            "epsilon_min": self.epsilon_min,
            "verified": self.verified,
            "method": self.method,
            "evaluations": self.evaluations,
            "adversarial_class": self.adversarial_class,
            "original_class": self.original_class,
            "kind": self.kind,
            "reason": self.reason,
            "pgd": None if self.pgd is None else self.pgd.to_dict(),
            "quadratic": None if self.quadratic is None else self.quadratic.to_dict(),
        }


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman and Kendall between lambda_max and 1 / epsilon_min, with bootstrap intervals."""

    count: int
    unpaired: int
    spearman: float | None
    kendall: float | None
    spearman_interval: tuple[float, float] | None
    kendall_interval: tuple[float, float] | None
    resamples: int
    dropped_resamples: int
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """The correlation as JSON (``attack_summary``'s spearman, kendall and intervals)."""
        return {
            "count": self.count,
            "unpaired": self.unpaired,
            "spearman": self.spearman,
            "kendall": self.kendall,
            "intervals": {
                "spearman": list(self.spearman_interval) if self.spearman_interval else None,
                "kendall": list(self.kendall_interval) if self.kendall_interval else None,
                "confidence": self.confidence,
                "method": "percentile bootstrap",
                "resamples": self.resamples,
                "dropped_resamples": self.dropped_resamples,
            },
        }


@dataclass(frozen=True)
class RadiusSuccess:
    """Attack success at one radius over the samples: a verified example with applied norm <= eps.

    ``success_rate`` counts an example from either attack (PGD at this radius, or the minimum-norm
    attack's when its epsilon_min <= eps); ``pgd_success_rate`` PGD's alone. ``robust_accuracy`` is
    1 - success_rate: the fraction of samples whose prediction no attack changed within eps. It is
    an upper bound on the true robust accuracy (a stronger attack can only lower it).
    """

    eps: float
    success_rate: float
    pgd_success_rate: float
    samples: int

    @property
    def robust_accuracy(self) -> float:
        """The fraction of samples whose prediction no verified example changed within eps."""
        return 1.0 - self.success_rate

    def to_dict(self) -> dict[str, Any]:
        """One row of ``attack_summary.success_rate_by_eps``."""
        return {
            "eps": self.eps,
            "success_rate": self.success_rate,
            "pgd_success_rate": self.pgd_success_rate,
            "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_kind": "upper_bound",
            "samples": self.samples,
        }


@dataclass(frozen=True)
class AttackSummary:
    """The attack stage over all samples: robust accuracy per radius, rank correlation, quadratic regime.

    ``status`` is ``not_run`` (with ``reason``) when no gradient attack can run on the model
    (piecewise-constant scores; a finite-difference Jacobian over the budget). ``correlation``
    pairs each sample's lambda_max (of ``lambda_kind``) with 1 / epsilon_min; ``per_class``
    groups the pairs by predicted class. ``quadratic_radius`` is the median over the samples
    whose top eigenvector the audit kept (``quadratic_checked`` of them).
    """

    status: Literal["run", "not_run"]
    reason: str | None
    norm: Norm
    gradients: str
    input_range: tuple[float, float] | None
    budget: int
    attempted: int
    verified: int
    success_rate_by_eps: tuple[RadiusSuccess, ...]
    correlation: RankCorrelation | None
    per_class: tuple[tuple[int, RankCorrelation], ...]
    lambda_kind: str
    quadratic_radius: float | None
    quadratic_checked: int
    quadratic_without: int
    seconds: float
    #: ``--fail-robust-below``: the robust accuracy every radius must reach (None: no gate).
    robust_below: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """``attack_summary``: issue 11's contract fields first, then what they rest on."""
        correlation = self.correlation.to_dict() if self.correlation is not None else {
            "count": 0, "unpaired": self.attempted, "spearman": None, "kendall": None, "intervals": None,
        }
        return {
            "status": self.status,
            "reason": self.reason,
            "success_rate_by_eps": [row.to_dict() for row in self.success_rate_by_eps],
            **correlation,
            "quadratic_radius": {
                "median": self.quadratic_radius,
                "checked": self.quadratic_checked,
                "without_regime": self.quadratic_without,
                "unit": "input norm along the top eigenvector (t)",
            },
            "per_class": [{"class": label, **value.to_dict()} for label, value in self.per_class],
            "pairs": "(lambda_max, 1 / epsilon_min) over samples with a verified example",
            "lambda_kind": self.lambda_kind,
            "norm": self.norm,
            "gradients": self.gradients,
            "input_range": None if self.input_range is None else list(self.input_range),
            "budget": self.budget,
            "attempted": self.attempted,
            "verified": self.verified,
            "robust_below": self.robust_below,
            "seconds": self.seconds,
        }
