"""Certified upper bounds on lambda_max(F(x)) from the weights: global and per sample.

    lambda_max(F(x)) = ||C(x)^{1/2} J(x)||^2,  J = M J_h  (M: the linear head, see head.py)
                     <= ||C(x)^{1/2} M||^2 ||J_h(x)||^2.

- Global (every x in R^d, or in the given box): ||J_h(x)|| <= L(h), the certified Lipschitz
  constant composed along the graph (compose.py), and sup_p ||C^{1/2} M||^2 =
  max_ij ||m_i - m_j||^2 / 4 <= ||M||^2 / 2, so lambda_max(F) <= L^2 / 2 in the plain form.
- Per sample: ||J_h(x)|| <= L_x(h), composed from local gains at the sample's activations
  (exact for the linear layers, the actual derivatives for GELU/tanh/softmax/LayerNorm and
  attention's products), and ||C(x)^{1/2} M||^2 exactly. Also reported, and used when smaller:
  ||C(x)|| L_x(logits)^2 with ||C|| <= min(1/2, 1 - sum p^2).

What each needs: the global bound needs only the weights. For attention, products of two
activations are bounded through the activations' magnitude (finite behind a LayerNorm,
whatever the input); elsewhere such products (gates) need a bounded input domain, and without
one the global bound is null with that reason. The per-sample bound holds at its sample only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from fimaudit.bounds.background import BackgroundTask
from fimaudit.bounds.compose import BoundEngine, Propagation, inverted_residual_factor
from fimaudit.bounds.folding import fold_batchnorms
from fimaudit.bounds.head import LinearHead, find_linear_head
from fimaudit.bounds.linalg import certify
from fimaudit.bounds.probe import IntermediateProbe
from fimaudit.bounds.stored import load_or_derive, model_key, store
from fimaudit.cache import ResultCache
from fimaudit.errors import FimauditError, ModelTimeoutError
from fimaudit.fisher.covariance import covariance_norm_bound, covariance_sqrt, softmax_covariance
from fimaudit.graph.architecture import Architecture, prepare_view
from fimaudit.graph.view import GraphView
from fimaudit.results import Bound, Kind
from fimaudit.runtime import DEFAULT_TIMEOUT_S

logger = logging.getLogger(__name__)

KIND: Kind = "upper_bound"


def _bound(entry: dict[str, Any]) -> Bound:
    """A typed bound from its JSON-ready fields (value first; the rest are its evidence)."""
    ready = json_ready(entry)
    return Bound(ready.pop("value"), KIND, ready)


@dataclass
class BoundAnalysis:
    """Everything the bounds found for one model: the global bound and one per sample."""

    global_bound: Bound
    samples: list[Bound | None] = field(default_factory=list)
    seconds: float = 0.0


def json_ready(value: Any) -> Any:
    """The same structure with every non-finite float (an overflowed product, 0/0) as None.

    JSON has no Infinity or NaN, and fimaudit's writer refuses them.
    """
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def _finite(value: float) -> float | None:
    """A bound that overflowed is no number to print (JSON has no Infinity): None, with a reason."""
    return value if math.isfinite(value) else None


def _statement(input_range: tuple[float, float] | None) -> str:
    if input_range is None:
        return "lambda_max(F(x)) <= value for every input x (no domain assumed)"
    low, high = input_range
    return f"lambda_max(F(x)) <= value for every input x with entries in [{low:g}, {high:g}]"


def _largest_gains(propagation: Propagation, count: int = 10) -> list[dict[str, Any]]:
    """The layers that multiply the constant most: where the model's sensitivity comes from."""
    ranked = sorted(propagation.records, key=lambda record: record.gain, reverse=True)
    return [{"node": r.node, "op": r.op, "gain": r.gain} for r in ranked[:count] if r.gain > 1.0]


def _assumptions(propagation: Propagation) -> list[str]:
    notes = {record.assumption for record in propagation.records if record.assumption}
    return sorted(n for n in notes if n)


def _block_entries(engine: BoundEngine, architecture: Architecture | None) -> list[dict[str, Any]]:
    """Recognised blocks with their growth factor L(out) / L(in) (and residual branch gains)."""
    if architecture is None or engine.global_result is None:
        return []
    entries = []
    view = engine.view
    for block in architecture.blocks:
        start, end = block.input, block.output
        entry: dict[str, Any] = {"kind": block.kind, "input": start, "output": end, "nodes": len(block.nodes),
                 "first_node": block.nodes[0] if block.nodes else None,
                 "factor": engine.block_factor(start, end) if start and end else None}
        join = next((n for n in view.nodes if n.name == block.join), None) if block.join else None
        if join is not None and start:
            entry["terms"] = {name: engine.block_factor(start, name) for name in join.input if name in view.varying}
        if block.kind == "inverted_residual":
            entry["composition"] = inverted_residual_factor(engine, block)
        entries.append(entry)
    return entries


class FisherBounds:
    """Bounds for one logits model: build once, then ``global_bound()`` and ``sample_bound()``."""

    def __init__(
        self,
        logits_model: onnx.ModelProto,
        input_name: str,
        logits_name: str,
        sample_shape: Sequence[int],
        num_classes: int,
        input_range: tuple[float, float] | None = None,
        providers: Sequence[str] | None = None,
        extra_feeds: dict[str, np.ndarray] | None = None,
        view: GraphView | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        cache: ResultCache | None = None,
        model_digest: str | None = None,
    ) -> None:
        self.model = logits_model
        # The global layer gains are kept on disk (bounds/stored.py): the costly part, the same every run.
        self.cache = cache
        self.cache_key = None if cache is None or not cache.enabled else model_key(
            cache, logits_model, input_name, logits_name, sample_shape, num_classes, input_range, model_digest
        )
        self.gains_from_cache: bool | None = None
        self.timeout = timeout
        self.logits_name = logits_name
        self.num_classes = num_classes
        self.input_range = input_range
        self.view = view or prepare_view(logits_model, input_name, [logits_name], tuple(sample_shape))[0]
        self.folded = fold_batchnorms(self.view)
        magnitude = math.inf if input_range is None else max(abs(input_range[0]), abs(input_range[1]))
        self.engine = BoundEngine(self.view, magnitude)
        self.providers = providers
        self.extra_feeds = extra_feeds
        self._probe: IntermediateProbe | None = None
        self._reads_activations: bool | None = None  # does any local rule read the sample's activations?
        self.head: LinearHead | None = None

    def probe(self) -> IntermediateProbe:
        """The session that returns the intermediate tensors the bounds need (built on first use: it is costly)."""
        if self._probe is None:
            engine = self.engine
            wanted = engine.value_tensors() + engine.unknown_shape_tensors() + engine.unknown_constant_tensors()
            self._probe = IntermediateProbe(
                self.model, self.view, wanted, self.providers, self.extra_feeds, self.timeout
            )
        return self._probe

    def learn_shapes(self, sample: np.ndarray) -> None:
        """Fill what static analysis could not resolve from one probe run.

        That is shapes, and the values of computed tensors that do not depend on the input's values
        (the same for every input).
        """
        unknown = self.engine.unknown_shape_tensors()
        fixed = self.engine.unknown_constant_tensors()
        if not unknown and not fixed:
            return
        values = self.probe().run(sample)
        for name in unknown:
            if name in values:
                self.view.shapes[name] = tuple(int(d) for d in values[name].shape)
        for name in fixed:
            if name in values:
                self.view.constants[name] = np.asarray(values[name])
                self.view.shapes[name] = tuple(int(d) for d in values[name].shape)

    def global_bound(self, family: str = "unknown", architecture: Architecture | None = None) -> Bound:
        """The bound valid for every input, with per-layer contributions."""
        self.gains_from_cache = load_or_derive(self.engine, self.cache, self.cache_key)
        propagation = self.engine.run_global()
        if not self.gains_from_cache:
            store(self.engine, self.cache, self.cache_key)
        self.head = find_linear_head(self.view, self.logits_name, self.num_classes)
        lipschitz_h = propagation.of(self.head.tensor)
        lipschitz = propagation.of(self.logits_name)
        factor = self.head.global_factor()
        candidates = []
        if lipschitz_h is not None:
            candidates.append(certify(factor * lipschitz_h**2))
        if lipschitz is not None:
            candidates.append(certify(0.5 * lipschitz**2))
        value = _finite(min(candidates)) if candidates else None
        problems = [problem.to_dict() for problem in propagation.problems]
        reason = None
        if value is None:
            reason = ("; ".join(p["reason"] for p in problems[:5]) if problems else
                      "the composed bound exceeds the floating-point range")
        return _bound({
            "value": value,
            "family": family,
            "statement": _statement(self.input_range),
            "lipschitz": lipschitz,
            "head": {"tensor": self.head.tensor, "lipschitz": lipschitz_h, "covariance_factor": factor,
                     "nodes": self.head.nodes, "classes": self.num_classes},
            "per_layer": [record.to_dict() for record in propagation.records],
            "largest_gains": _largest_gains(propagation),
            "blocks": _block_entries(self.engine, architecture),
            "problems": problems,
            "reason": reason,
            "assumptions": _assumptions(propagation),
            "layer_gains": "off" if self.cache_key is None else ("cached" if self.gains_from_cache else "derived"),
        })

    def prepare_samples(self) -> None:
        """What the first sample bound would make: which local rules read activations, the probe session.

        Why here: the global stage runs on a thread of its own beside the samples (audit.py), so
        what it prepares costs the audit nothing, while the sample stage runs after the samples,
        on the audit's clock. With the layer gains cached, the global stage is short and the
        first sample bound made both (the rule modules' import and the probe session: 0.05 to
        0.1 s of the small ViT's 0.2 s of per-sample bounds in a 2 s cached audit).
        """
        if self._reads_activations is None:
            self._reads_activations = bool(self.engine.value_tensors())
        if self._reads_activations:
            self.probe()

    def sample_bound(self, sample: np.ndarray, logits: np.ndarray, measured: float | None = None) -> Bound:
        """The bound at one sample (its activations and probabilities)."""
        if self.head is None:
            self.global_bound()
        assert self.head is not None
        # A model whose local rules read no activation (ReLU CNNs: only the head's covariance is
        # per sample) needs no probe run, and no probe session: building one costs a second copy
        # of the model in ONNX Runtime (VGG-11: 13 of a cached audit's 15 bound seconds).
        if self._reads_activations is None:
            self._reads_activations = bool(self.engine.value_tensors())
        values = self.probe().run(sample) if self._reads_activations else {}
        propagation = self.engine.run_local(values)
        lipschitz_h = propagation.of(self.head.tensor)
        lipschitz = propagation.of(self.logits_name)
        covariance = softmax_covariance(np.asarray(logits, dtype=np.float64).reshape(-1))
        head_factor = self.head.sample_factor(covariance_sqrt(covariance))
        norm_c = covariance_norm_bound(np.asarray(logits, dtype=np.float64).reshape(-1))
        candidates = []
        if lipschitz_h is not None:
            candidates.append(certify(head_factor * lipschitz_h**2))
        if lipschitz is not None:
            candidates.append(certify(norm_c * lipschitz**2))
        value = _finite(min(candidates)) if candidates else None
        entry: dict[str, Any] = {
            "value": value,
            "lipschitz": lipschitz,
            "head_lipschitz": lipschitz_h,
            "covariance_factor": head_factor,
            "covariance_norm_bound": norm_c,
            "tightness": (value / measured) if value is not None and measured else None,
        }
        if value is None:
            entry["reason"] = (
                "; ".join(p.reason for p in propagation.problems[:3])
                or "the composed bound exceeds the floating-point range"
            )
        return _bound(entry)


@dataclass
class GlobalStage:
    """The model-wide part of the bounds: the engine with its layer gains, and the global bound."""

    bounds: FisherBounds
    global_bound: Bound
    seconds: float


def global_stage(
    logits_model: onnx.ModelProto,
    input_name: str,
    logits_name: str,
    sample: np.ndarray,
    num_classes: int,
    architecture: Architecture | None = None,
    input_range: tuple[float, float] | None = None,
    providers: Sequence[str] | None = None,
    extra_feeds: dict[str, np.ndarray] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    cache: ResultCache | None = None,
    model_digest: str | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> GlobalStage:
    """What needs the weights and one sample's shapes only (the costly part: every layer's norm).

    ``sample``: one input (its shapes fill what static analysis left unknown); ``cancelled``:
    checked before every layer rule (raises BoundsCancelled), for a caller on another thread.
    """
    started = time.perf_counter()
    family = architecture.family if architecture is not None else "unknown"
    bounds = FisherBounds(logits_model, input_name, logits_name, sample.shape, num_classes,
                          input_range, providers, extra_feeds, timeout=timeout, cache=cache,
                          model_digest=model_digest)
    if cancelled is not None:
        bounds.engine.cancelled = cancelled
    bounds.learn_shapes(sample)
    result = bounds.global_bound(family, architecture)
    bounds.prepare_samples()
    return GlobalStage(bounds, result, time.perf_counter() - started)


def sample_stage(
    stage: GlobalStage, inputs: np.ndarray, logits: np.ndarray, measured: Sequence[float] | None = None
) -> BoundAnalysis:
    """One bound per sample from the global stage, with tightness against ``measured`` lambda_max."""
    started = time.perf_counter()
    samples: list[Bound | None] = []
    for index in range(inputs.shape[0]):
        value = None if measured is None else float(measured[index])
        samples.append(stage.bounds.sample_bound(inputs[index], logits[index], value))
    details = json_ready(_sample_summary(samples, measured, stage.global_bound.value))
    result = stage.global_bound.with_details(per_sample=details)
    return BoundAnalysis(result, samples, time.perf_counter() - started)


def analyse_bounds(
    logits_model: onnx.ModelProto,
    input_name: str,
    logits_name: str,
    inputs: np.ndarray,
    logits: np.ndarray,
    measured: Sequence[float] | None = None,
    architecture: Architecture | None = None,
    input_range: tuple[float, float] | None = None,
    providers: Sequence[str] | None = None,
    extra_feeds: dict[str, np.ndarray] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    cache: ResultCache | None = None,
    model_digest: str | None = None,
) -> BoundAnalysis:
    """Global bound and one bound per sample, with tightness against ``measured`` lambda_max.

    ``cache``: where the global layer gains are kept between runs (None: nowhere);
    ``model_digest``: the SHA-256 of the model's file and weights, when the caller has it.
    """
    stage = global_stage(logits_model, input_name, logits_name, inputs[0], logits.shape[-1], architecture,
                         input_range, providers, extra_feeds, timeout, cache, model_digest)
    analysis = sample_stage(stage, inputs, logits, measured)
    return dataclasses.replace(analysis, seconds=analysis.seconds + stage.seconds)


def _sample_summary(
    samples: list[Bound | None], measured: Sequence[float] | None, global_value: float | None
) -> dict[str, Any]:
    values = np.array([s.value for s in samples if s and s.value is not None], dtype=np.float64)
    ratios = np.array(
        [s.details["tightness"] for s in samples if s and s.details["tightness"] is not None], dtype=np.float64
    )
    summary: dict[str, Any] = {"count": int(values.size)}
    if values.size:
        summary.update({"max": float(values.max()), "median": float(np.median(values)), "min": float(values.min())})
    if ratios.size:
        summary["tightness"] = {
            "median": float(np.median(ratios)), "min": float(ratios.min()), "max": float(ratios.max())
        }
    if measured is not None and len(measured) and global_value is not None and max(measured) > 0:
        summary["global_over_max_measured"] = global_value / float(max(measured))
    return summary


def start_global_stage(
    logits_model: onnx.ModelProto,
    input_name: str,
    logits_name: str,
    sample: np.ndarray,
    num_classes: int,
    architecture: Architecture,
    providers: Sequence[str] | None = None,
    extra_feeds: dict[str, np.ndarray] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    cache: ResultCache | None = None,
    model_digest: str | None = None,
) -> BackgroundTask[GlobalStage]:
    """The global stage on a thread of its own, for ``bound_audit(early=...)`` to collect (background.py)."""

    def compute(cancelled: Callable[[], bool]) -> GlobalStage:
        return global_stage(logits_model, input_name, logits_name, sample, num_classes, architecture,
                            None, providers, extra_feeds, timeout, cache, model_digest, cancelled)

    return BackgroundTask(compute, name="fimaudit-bounds").start()


def bound_audit(
    loaded_model: onnx.ModelProto,
    logits_model: onnx.ModelProto,
    input_name: str,
    logits_name: str,
    inputs: np.ndarray,
    logits: np.ndarray,
    measured: Sequence[float],
    providers: Sequence[str] | None = None,
    extra_feeds: dict[str, np.ndarray] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    cache: ResultCache | None = None,
    model_digest: str | None = None,
    early: BackgroundTask[GlobalStage] | None = None,
    architecture: Architecture | None = None,
) -> tuple[dict[str, Any], Bound, list[Bound | None]]:
    """What the audit records: (architecture as JSON-ready data, global bound, per-sample bounds).

    A model the bounds cannot handle (an op without a rule, an unreadable shape) gives a null
    bound with the reason instead of failing the audit: lambda_max is the audit's result, the
    bound its theoretical companion. ``early``: the global stage already started
    (``start_global_stage``, with the same model and ``architecture``); its outcome is
    collected here. The bound's ``seconds`` are those the caller spent here (waiting for the
    global stage included); ``global_seconds`` those the global stage took, wherever it ran.
    """
    from fimaudit.graph.architecture import recognise_architecture

    if architecture is None:
        architecture = recognise_architecture(loaded_model, input_name)
    started = time.perf_counter()
    try:
        if early is not None:
            stage = early.result()
        else:
            stage = global_stage(logits_model, input_name, logits_name, inputs[0], logits.shape[-1], architecture,
                                 None, providers, extra_feeds, timeout, cache, model_digest)
        analysis = sample_stage(stage, inputs, logits, measured)
    except ModelTimeoutError:  # a time limit the user set is not a reason for a null bound
        raise
    except FimauditError as exc:
        logger.warning("no bound: %s", exc)
        empty = Bound(None, KIND, {"family": architecture.family, "reason": str(exc),
                                   "per_layer": [], "blocks": [], "problems": [], "assumptions": []})
        return architecture.to_dict(), empty, [None] * inputs.shape[0]
    timing = {"seconds": time.perf_counter() - started, "global_seconds": stage.seconds,
              "global_in_background": early is not None}
    return architecture.to_dict(), analysis.global_bound.with_details(**timing), analysis.samples
