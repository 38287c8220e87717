"""Compare audited models: do variants of one network agree, and how do the models rank?

**Agreement** (issue 17). Two models are *comparable* when they take the same per-sample input up
to a layout permutation (NCHW vs NHWC: fimaudit permutes the data itself, fimaudit/compare_audit.py)
and have the same number of classes; parameter counts, architecture families, producers and
op sets are shown as evidence, never used as gates. Which pairs are checked: every model against
``reference`` when one is named, every pair within each named group, otherwise every comparable
pair. A pair agrees on a sample when the predicted class is the same, the top probabilities are
within ``rtol`` (absolute: probabilities live in [0, 1]) and the lambda_max are within ``rtol``
relative, measured on a scale no smaller than ``LAMBDA_FLOOR`` times the largest lambda_max of
the pair (a saturated sample with lambda_max 1e-13 cannot decide). A pair agrees when at least
``min_agreement`` of its samples do. Deviations fimaudit can explain are named by cause (float16
weights, quantised ops, a graph that differs in structure); float16 and quantised models get the
looser tolerances of :data:`EXPECTED_RTOL`, stated with the pair. :func:`check_consistency` reads
typed audits (``AuditResult``) and returns a :class:`Consistency` whose status is ``agree``,
``disagree`` or ``not_checked`` with the reason; the report only serialises and renders it.

**Ranking** (:func:`rank_models`). The paper's theoretical ranking checked against measurement:
the bound orders architectures by what their weights allow in the worst case, the audit by what
the data actually shows. It takes audit documents (report/document.py's JSON, one per model,
audited on the same data) and returns both rankings, Spearman's rho and Kendall's tau between them
(with p-values from scipy when there are enough models to mean anything), and the concordant /
discordant pairs. Rank 1 is the least sensitive model (smallest lambda_max, smallest bound).
Models without a bound are listed and left out of the bound ranking, never given a made-up value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import onnx

from fimaudit.errors import InputError
from fimaudit.statistics import STATISTICS

if TYPE_CHECKING:
    from fimaudit.compare_audit import ModelOutcome
    from fimaudit.results import AuditResult

BOUND_KINDS = ("global", "per_sample_median")
# Below this many models a rank correlation's p-value says nothing; it is reported as None.
MIN_MODELS_FOR_P_VALUE = 4


def _bound(document: dict[str, Any], kind: str) -> float | None:
    bound = document.get("bound") or {}
    value = bound.get("value") if kind == "global" else (bound.get("per_sample") or {}).get("median")
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _ranks(values: Sequence[float]) -> list[int]:
    """1-based ranks, ties sharing the smallest rank (1 = least sensitive)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0] * len(values)
    for position, index in enumerate(order):
        if position and values[index] == values[order[position - 1]]:
            ranks[index] = ranks[order[position - 1]]
        else:
            ranks[index] = position + 1
    return ranks


def agreement(measured: Sequence[float], bounds: Sequence[float]) -> dict[str, Any]:
    """Spearman and Kendall agreement of two orderings of the same models."""
    from scipy import stats  # lazily: scipy.stats costs ~1.2 s at every CLI start
    n = len(measured)
    concordant = discordant = 0
    for i, j in combinations(range(n), 2):
        product = np.sign(measured[i] - measured[j]) * np.sign(bounds[i] - bounds[j])
        concordant += int(product > 0)
        discordant += int(product < 0)
    entry: dict[str, Any] = {
        "models": n,
        "concordant_pairs": concordant,
        "discordant_pairs": discordant,
        "identical_order": _ranks(measured) == _ranks(bounds),
        "spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None,
    }
    if n >= 2 and len(set(measured)) > 1 and len(set(bounds)) > 1:
        rho, rho_p = stats.spearmanr(measured, bounds)
        tau, tau_p = stats.kendalltau(measured, bounds)
        entry.update({"spearman": float(rho), "kendall": float(tau)})
        if n >= MIN_MODELS_FOR_P_VALUE:
            entry.update({"spearman_p": float(rho_p), "kendall_p": float(tau_p)})
    return entry


def _same_data(documents: Sequence[dict[str, Any]]) -> bool:
    keys = {(d.get("data", {}).get("source"), d.get("data", {}).get("count")) for d in documents}
    return len(keys) == 1


def rank_models(documents: Sequence[dict[str, Any]], labels: Sequence[str] | None = None,
                statistic: str = "median") -> dict[str, Any]:
    """Both rankings of the audited models and their agreement, JSON-ready.

    ``documents``: audit documents (``build_document``), one per model, on the same data.
    ``labels``: names to show (default: the model paths).
    """
    if statistic not in STATISTICS:
        raise InputError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    if len(documents) < 2:
        raise InputError("ranking needs at least two audited models")
    names = list(labels) if labels is not None else [d["model"]["path"] for d in documents]
    measured = [float(d["summary"][statistic]) for d in documents]
    models: list[dict[str, Any]] = []
    for name, document, value in zip(names, documents, measured, strict=True):
        entry = {
            "model": name,
            "family": (document.get("architecture") or {}).get("family", "unknown"),
            "lambda_max": value,
        }
        for kind in BOUND_KINDS:
            entry[f"bound_{kind}"] = _bound(document, kind)
        global_bound = entry["bound_global"]
        entry["tightness"] = global_bound / value if global_bound is not None and value > 0 else None
        models.append(entry)
    for rank, entry in zip(_ranks(measured), models, strict=True):
        entry["rank_measured"] = rank
    result: dict[str, Any] = {
        "statistic": statistic,
        "same_data": _same_data(documents),
        "by_measured": [m["model"] for m in sorted(models, key=lambda m: m["rank_measured"])],
        "models": models,
        "agreement": {},
        "without_bound": {},
    }
    for kind in BOUND_KINDS:
        present = [m for m in models if m[f"bound_{kind}"] is not None]
        result["without_bound"][kind] = [m["model"] for m in models if m[f"bound_{kind}"] is None]
        values = [m[f"bound_{kind}"] for m in present]
        for rank, entry in zip(_ranks(values), present, strict=True):
            entry[f"rank_{kind}"] = rank
        result[f"by_bound_{kind}"] = [m["model"] for m in sorted(present, key=lambda m: m[f"rank_{kind}"])]
        result["agreement"][kind] = agreement([m["lambda_max"] for m in present], values) if len(present) >= 2 else None
    return result



# ---------------------------------------------------------------------------------------------
# Agreement of models that take the same input (issue 17)

#: Outcome of one pair and of the whole comparison.
AgreementStatus = Literal["agree", "disagree", "not_checked"]
#: How pairs were chosen: every comparable pair, against a named reference, within named groups.
PairingMode = Literal["auto", "reference", "groups", "none"]

#: Default relative tolerance for "the same numbers": finite differences in float32 are good to
#: about 1e-4 relative, and exporters may reorder float32 arithmetic.
DEFAULT_RTOL = 1e-2
#: lambda_max differences are measured on a scale no smaller than this times the pair's largest
#: lambda_max: a saturated sample (top probability 1 - 1e-12, lambda_max ~ 1e-13) is decided by
#: float32 rounding of its logits, not by the model, and must not decide the pair.
LAMBDA_FLOOR = 1e-6
#: Looser tolerances for deviations fimaudit can explain, with the reason stated in the report.
#: float16 weights carry 11 significant bits (relative rounding 4.9e-4 per weight); lambda_max,
#: quadratic in the Jacobian, moved by 6.5e-4 on the corpus CNN (tests/test_compare_pairing.py),
#: so 5e-2 leaves room for deeper nets. int8 weights (127 levels per tensor) moved the sample MLP's
#: lambda_max by 6.2e-2; quantised activations move it more, hence 0.25.
EXPECTED_RTOL = {"float16": 5e-2, "quantised": 2.5e-1}
#: Op types that mark a quantised model (ONNX Runtime's static and dynamic quantisation).
QUANTISED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax", "MatMulInteger", "ConvInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QAttention",
})
#: Op types that only move or relabel data: left out of "the graph differs in structure".
_STRUCTURE_NEUTRAL = frozenset({"Identity", "Constant", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                                "Transpose", "Shape", "Gather", "Concat", "Dropout"})
#: How many of a pair's most disagreeing samples the report lists.
WORST_SAMPLES = 5


@dataclass(frozen=True)
class Layout:
    """How the data was permuted for one model: ``permutation`` of the sample axes (data -> model)."""

    permutation: tuple[int, ...]
    name: str

    def to_dict(self) -> dict[str, Any]:
        """The layout as JSON: the permutation of the sample axes and its name."""
        return {"permutation": list(self.permutation), "name": self.name}


#: Sample-axis permutations fimaudit applies by itself: moving the channel axis of an image.
LAYOUTS = (Layout((1, 2, 0), "NCHW -> NHWC"), Layout((2, 0, 1), "NHWC -> NCHW"))


def _fits(expected: Sequence[Any], actual: Sequence[int]) -> bool:
    """Whether a declared sample shape (symbolic dims match any size) fits a concrete one."""
    return len(expected) == len(actual) and all(
        not isinstance(e, int) or e == a for e, a in zip(expected, actual, strict=True)
    )


def layout_for(data_shape: Sequence[int], model_shape: Sequence[Any]) -> Layout | None:
    """The layout permutation that makes samples of ``data_shape`` fit ``model_shape``.

    None when they fit as they are, or when no channel move makes them fit (the audit then
    refuses the data with its own message). Only channel moves are tried: a free search would
    also "fit" a square image by swapping its height and width.
    """
    data_shape = [int(d) for d in data_shape]
    if _fits(model_shape, data_shape) or len(data_shape) != 3:
        return None
    for layout in LAYOUTS:
        if _fits(model_shape, [data_shape[axis] for axis in layout.permutation]):
            return layout
    return None


def model_labels(paths: Sequence[str]) -> list[str]:
    """File names, or full paths where two models share a file name."""
    names = [os.path.basename(str(path)) for path in paths]
    return [str(path) if names.count(name) > 1 else name for path, name in zip(paths, names, strict=True)]


def quantised_ops(model: onnx.ModelProto) -> list[str]:
    """The quantisation op types of ``model``'s main graph (sorted; empty for a float model)."""
    return sorted({node.op_type for node in model.graph.node} & QUANTISED_OPS)


def float16_weights(model: onnx.ModelProto) -> int:
    """How many initializers (and Constant node values) are float16 or bfloat16."""
    low = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    count = sum(1 for tensor in model.graph.initializer if tensor.data_type in low)
    for node in model.graph.node:
        if node.op_type == "Constant":
            count += sum(1 for a in node.attribute if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in low)
    return count


@dataclass(frozen=True)
class ModelFacts:
    """What a comparison knows about one audited model: the gates and the evidence."""

    label: str
    path: str
    #: One sample's shape as the data holds it (the model's own shape with the layout undone).
    data_shape: tuple[int, ...]
    num_classes: int
    layout: Layout | None
    parameter_count: int
    family: str
    producer: str
    ops: frozenset[str]
    float16_weights: int
    quantised_ops: tuple[str, ...]
    gradients: str
    method: str
    gradients_note: str

    @classmethod
    def of(cls, label: str, outcome: ModelOutcome) -> ModelFacts:
        """The facts of an audited outcome (``outcome.result`` is not None)."""
        result = outcome.result
        assert result is not None
        # prepare_model set every sample dimension from the probe: all are ints here.
        model_shape = tuple(int(cast(int, d)) for d in result.prepared.selection.sample_shape)
        layout = outcome.layout
        data_shape = model_shape
        if layout is not None:  # model axis k holds data axis permutation[k]
            restored = [0] * len(model_shape)
            for k, axis in enumerate(layout.permutation):
                restored[axis] = model_shape[k]
            data_shape = tuple(restored)
        proto = result.prepared.loaded.proto
        description = result.prepared.description
        kinds = sorted({s.kind for s in result.samples})
        return cls(
            label=label, path=outcome.path, data_shape=data_shape, num_classes=result.prepared.num_classes,
            layout=layout, parameter_count=description.parameter_count,
            family=str((result.architecture or {}).get("family", "unknown")),
            producer=" ".join(p for p in (description.producer, description.producer_version) if p) or "unknown",
            ops=frozenset(description.op_histogram), float16_weights=float16_weights(proto),
            quantised_ops=tuple(quantised_ops(proto)), gradients=result.gradients,
            method=f"{result.config.method} ({', '.join(kinds)})", gradients_note=outcome.note or "",
        )

    def to_dict(self) -> dict[str, Any]:
        """The facts as JSON (the comparison report's per-model table)."""
        return {
            "label": self.label, "data_shape": list(self.data_shape), "num_classes": self.num_classes,
            "layout": None if self.layout is None else self.layout.to_dict(),
            "parameter_count": self.parameter_count, "family": self.family, "producer": self.producer,
            "float16_weights": self.float16_weights, "quantised_ops": list(self.quantised_ops),
            "gradients": self.gradients, "method": self.method, "note": self.gradients_note,
        }


def comparable(a: ModelFacts, b: ModelFacts) -> str | None:
    """Why ``a`` and ``b`` cannot be compared sample by sample, or None when they can."""
    if a.data_shape != b.data_shape:
        return f"they take different inputs ({list(a.data_shape)} vs {list(b.data_shape)} per sample)"
    if a.num_classes != b.num_classes:
        return f"they have different numbers of classes ({a.num_classes} vs {b.num_classes})"
    return None


def expected_deviations(a: ModelFacts, b: ModelFacts) -> tuple[list[str], float | None, str | None]:
    """Causes of deviation fimaudit can name, and the looser tolerance they allow (with why)."""
    causes: list[str] = []
    allowed: list[tuple[float, str]] = []
    for facts in (a, b):
        if facts.float16_weights:
            causes.append(f"{facts.label} holds {facts.float16_weights} float16 weight tensor(s)")
            allowed.append((EXPECTED_RTOL["float16"], "float16 weights (11 significant bits)"))
        if facts.quantised_ops:
            causes.append(f"{facts.label} is quantised ({', '.join(facts.quantised_ops)})")
            allowed.append((EXPECTED_RTOL["quantised"], "quantised ops (8-bit activations or weights)"))
    only_a = sorted(a.ops - b.ops - _STRUCTURE_NEUTRAL - QUANTISED_OPS)
    only_b = sorted(b.ops - a.ops - _STRUCTURE_NEUTRAL - QUANTISED_OPS)
    if only_a or only_b:
        parts = [f"only {m.label}: {', '.join(ops)}" for m, ops in ((a, only_a), (b, only_b)) if ops]
        causes.append("the graphs differ in structure (" + "; ".join(parts) + ")")
    if a.layout != b.layout:
        names = [f"{m.label} {m.layout.name}" for m in (a, b) if m.layout is not None]
        causes.append("the data was permuted for one layout (" + "; ".join(names) + ")")
    if not allowed:
        return causes, None, None
    rtol, why = max(allowed)
    return causes, rtol, why


@dataclass(frozen=True)
class SampleAgreement:
    """One sample of a pair: both models' prediction and lambda_max, and whether they agree."""

    index: int
    lambda_a: float
    lambda_b: float
    #: |lambda_a - lambda_b| on the scale max(|lambda_a|, |lambda_b|, floor).
    relative_difference: float
    class_a: int
    class_b: int
    top_prob_a: float
    top_prob_b: float
    agree: bool
    #: What made it disagree (empty when it agrees).
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The sample's agreement as JSON."""
        return {
            "index": self.index, "lambda_a": self.lambda_a, "lambda_b": self.lambda_b,
            "relative_difference": self.relative_difference, "class_a": self.class_a, "class_b": self.class_b,
            "top_prob_a": self.top_prob_a, "top_prob_b": self.top_prob_b, "agree": self.agree, "why": self.why,
        }


@dataclass(frozen=True)
class PairAgreement:
    """Two models compared sample by sample (``samples`` empty when not comparable)."""

    a: str
    b: str
    status: AgreementStatus
    reason: str
    rtol: float
    rtol_reason: str | None
    floor: float
    min_agreement: float
    samples: tuple[SampleAgreement, ...]
    expected: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def agreeing(self) -> int:
        """How many samples agree within the pair's tolerance."""
        return sum(1 for s in self.samples if s.agree)

    @property
    def fraction(self) -> float | None:
        """The share of samples that agree (None with no samples, so no share is invented)."""
        return self.agreeing / len(self.samples) if self.samples else None

    @property
    def max_relative_difference(self) -> float | None:
        """The largest relative difference of lambda_max over the samples (None with no samples)."""
        return max((s.relative_difference for s in self.samples), default=None)

    @property
    def same_predicted_class(self) -> int:
        """How many samples both models assign to the same class."""
        return sum(1 for s in self.samples if s.class_a == s.class_b)

    def worst(self, count: int = WORST_SAMPLES) -> list[SampleAgreement]:
        """The samples that disagree most: disagreeing first, then by relative difference."""
        return sorted(self.samples, key=lambda s: (s.agree, -s.relative_difference))[:count]

    def to_dict(self) -> dict[str, Any]:
        """The pair's agreement as JSON, with its counts and its worst sample."""
        worst = self.worst(1)
        return {
            "a": self.a, "b": self.b, "status": self.status, "reason": self.reason,
            "rtol": self.rtol, "rtol_reason": self.rtol_reason, "lambda_floor": self.floor,
            "min_agreement": self.min_agreement, "samples": len(self.samples), "agreeing_samples": self.agreeing,
            "fraction_agreeing": self.fraction, "same_predicted_class": self.same_predicted_class,
            "max_relative_difference": self.max_relative_difference,
            "worst_sample": worst[0].index if worst else None,
            "worst_samples": [s.to_dict() for s in self.worst()],
            "expected_deviations": list(self.expected), "evidence": self.evidence,
            "per_sample": [s.to_dict() for s in self.samples],
        }


def _agree_samples(a: AuditResult, b: AuditResult, rtol: float) -> tuple[list[SampleAgreement], float]:
    left = {s.index: s for s in a.samples}
    right = {s.index: s for s in b.samples}
    common = sorted(set(left) & set(right))
    largest = max((abs(v) for i in common for v in (left[i].value, right[i].value)), default=0.0)
    floor = LAMBDA_FLOOR * largest
    samples = []
    for i in common:
        x, y = left[i], right[i]
        scale = max(abs(x.value), abs(y.value), floor)
        relative = abs(x.value - y.value) / scale if scale > 0 else 0.0
        why = []
        if x.predicted_class != y.predicted_class:
            why.append(f"class {x.predicted_class} vs {y.predicted_class}")
        if abs(x.top_prob - y.top_prob) > rtol:
            why.append(f"top probability {x.top_prob:.4g} vs {y.top_prob:.4g}")
        if relative > rtol:
            why.append(f"lambda_max {x.value:.4g} vs {y.value:.4g}")
        samples.append(SampleAgreement(i, x.value, y.value, relative, x.predicted_class, y.predicted_class,
                                       x.top_prob, y.top_prob, not why, "; ".join(why)))
    return samples, floor


def pair_agreement(a: ModelFacts, result_a: AuditResult, b: ModelFacts, result_b: AuditResult,
                   rtol: float = DEFAULT_RTOL, min_agreement: float = 1.0) -> PairAgreement:
    """Sample-by-sample agreement of two audits of the same data."""
    evidence = {
        "parameter_count": [a.parameter_count, b.parameter_count], "family": [a.family, b.family],
        "producer": [a.producer, b.producer], "gradients": [a.gradients, b.gradients],
    }
    causes, loosened, why = expected_deviations(a, b)
    tolerance = max(rtol, loosened) if loosened is not None else rtol
    rtol_reason = f"loosened from {rtol:g} for {why}" if loosened is not None and loosened > rtol else None
    blocked = comparable(a, b)
    if blocked is not None:
        return PairAgreement(a.label, b.label, "not_checked", f"not comparable: {blocked}", tolerance, rtol_reason,
                             0.0, min_agreement, (), tuple(causes), evidence)
    samples, floor = _agree_samples(result_a, result_b, tolerance)
    if not samples:
        return PairAgreement(a.label, b.label, "not_checked", "no sample was audited by both", tolerance, rtol_reason,
                             floor, min_agreement, (), tuple(causes), evidence)
    agreeing = sum(1 for s in samples if s.agree)
    worst = sorted(samples, key=lambda s: (s.agree, -s.relative_difference))[0]
    counted = f"{agreeing} of {len(samples)} samples agree within {tolerance:g}"
    if agreeing >= min_agreement * len(samples):
        status: AgreementStatus = "agree"
        reason = (
            f"{counted} (largest lambda_max difference {worst.relative_difference:.2g} relative, sample {worst.index})"
        )
    else:
        status = "disagree"
        reason = f"only {counted}; sample {worst.index} differs most ({worst.why})"
    return PairAgreement(a.label, b.label, status, reason, tolerance, rtol_reason, floor, min_agreement,
                         tuple(samples), tuple(causes), evidence)


@dataclass(frozen=True)
class Consistency:
    """The comparison's answer: do the models that were checked agree, and were any checked?"""

    status: AgreementStatus
    reason: str
    mode: PairingMode
    #: The user asked for a check (--reference or --group): not checked then fails.
    requested: bool
    pairs: tuple[PairAgreement, ...]
    models: tuple[ModelFacts, ...]
    failures: tuple[str, ...] = ()
    reference: str | None = None
    groups: tuple[tuple[str, ...], ...] = ()

    @property
    def passed(self) -> bool:
        """Exit 0: every checked pair agrees, or nothing was asked and nothing could be checked."""
        if self.failures:
            return False
        return self.status == "agree" or (self.status == "not_checked" and not self.requested)

    def to_dict(self) -> dict[str, Any]:
        """The consistency outcome as JSON."""
        return {
            "status": self.status, "reason": self.reason, "passed": self.passed, "mode": self.mode,
            "requested": self.requested, "reference": self.reference, "groups": [list(g) for g in self.groups],
            "failures": list(self.failures),
        }


def _resolve(name: str, paths: Sequence[str], labels: Sequence[str]) -> int:
    """The position of the model that ``name`` (a path or a label) names."""
    for position, (path, label) in enumerate(zip(paths, labels, strict=True)):
        if name in (path, label):
            return position
    for position, path in enumerate(paths):
        if os.path.exists(name) and os.path.exists(path) and os.path.samefile(name, path):
            return position
    raise InputError(f"{name!r} is not one of the compared models ({', '.join(labels)})")


def resolve_pairing(paths: Sequence[str], reference: str | None = None,
                    groups: Sequence[str] = ()) -> tuple[int | None, list[list[int]]]:
    """Positions of the reference model and of each group's models (``groups``: "A,B" strings)."""
    labels = model_labels(paths)
    ref = _resolve(reference, paths, labels) if reference is not None else None
    resolved = []
    for group in groups:
        names = [name.strip() for name in group.split(",") if name.strip()]
        members = sorted({_resolve(name, paths, labels) for name in names})
        if len(members) < 2:
            raise InputError(f"--group {group!r} names fewer than two distinct models")
        resolved.append(members)
    return ref, resolved


def check_consistency(
    outcomes: Sequence[ModelOutcome],
    rtol: float = DEFAULT_RTOL,
    reference: str | None = None,
    groups: Sequence[str] = (),
    min_agreement: float = 1.0,
    check: bool = True,
) -> Consistency:
    """Which pairs to check (see the module docstring), each pair's agreement, and the outcome."""
    if not 0.0 < min_agreement <= 1.0:
        raise InputError(f"--min-agreement must be in (0, 1], got {min_agreement}")
    paths = [outcome.path for outcome in outcomes]
    labels = model_labels(paths)
    ref, members = resolve_pairing(paths, reference, groups)
    audited = {i: o.result for i, o in enumerate(outcomes) if o.result is not None}
    facts = {i: ModelFacts.of(labels[i], outcomes[i]) for i in audited}
    failures = tuple(labels[i] for i, o in enumerate(outcomes) if o.result is None)
    requested = ref is not None or bool(members)
    mode: PairingMode = "reference" if ref is not None else "groups" if members else "auto" if check else "none"
    wanted: list[tuple[int, int]] = []
    if ref is not None:
        wanted += [(ref, i) for i in range(len(outcomes)) if i != ref]
    for group in members:
        wanted += [pair for pair in combinations(group, 2) if pair not in wanted]
    if mode == "auto":
        wanted = [(i, j) for i, j in combinations(sorted(facts), 2) if comparable(facts[i], facts[j]) is None]
    pairs = []
    for i, j in wanted:
        if i not in facts or j not in facts:
            missing = labels[i] if i not in facts else labels[j]
            pairs.append(PairAgreement(labels[i], labels[j], "not_checked", f"{missing} could not be audited",
                                       rtol, None, 0.0, min_agreement, (), ()))
            continue
        pairs.append(pair_agreement(facts[i], audited[i], facts[j], audited[j], rtol, min_agreement))
    status, reason = _outcome(pairs, mode)
    if failures:
        reason += f"; {len(failures)} model(s) could not be audited: {', '.join(failures)}"
    return Consistency(status, reason, mode, requested, tuple(pairs), tuple(facts[i] for i in sorted(facts)), failures,
                       labels[ref] if ref is not None else None, tuple(tuple(labels[i] for i in g) for g in members))


def _names(pairs: Sequence[PairAgreement]) -> str:
    return "; ".join(f"{p.a} vs {p.b}" for p in pairs)


def _outcome(pairs: Sequence[PairAgreement], mode: PairingMode) -> tuple[AgreementStatus, str]:
    """The comparison's status and reason from its pairs."""
    if mode == "none":
        return "not_checked", "agreement not checked (--no-check)"
    disagreeing = [p for p in pairs if p.status == "disagree"]
    unchecked = [p for p in pairs if p.status == "not_checked"]
    agreeing = [p for p in pairs if p.status == "agree"]
    if disagreeing:
        reason = f"models that take the same input do not agree: {_names(disagreeing)}"
        if unchecked:
            reason += f"; not checked: {_names(unchecked)}"
        return "disagree", reason
    if unchecked:
        why = "; ".join(f"{p.a} vs {p.b}: {p.reason}" for p in unchecked)
        return "not_checked", f"not every requested pair could be checked ({why})"
    if agreeing:
        return "agree", f"models that take the same input agree ({_names(agreeing)})"
    return "not_checked", ("no two models take the same input with the same number of classes, "
                           "so no agreement was checked")
