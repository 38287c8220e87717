"""The audit: from a model file and data to per-sample lambda_max, a summary and a verdict.

This module only orchestrates; each step lives in its own module (intake in graph/, running in
runtime.py, gradients in gradients/ (graphs built by autodiff/), estimators in fisher/; random
streams in randomness.py).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort

import fimaudit
from fimaudit import ort_threads
from fimaudit.data import AuditData, load_data
from fimaudit.data.streaming import SWEEP_BATCH_ROWS as STREAM_BATCH_ROWS
from fimaudit.data.streaming import is_streamed
from fimaudit.errors import InputError, ModelError
from fimaudit.fisher.fd_cost import ProgressLog as FdProgressLog
from fimaudit.fisher.fd_cost import plan_finite_differences
from fimaudit.fisher.registry import get_estimator
from fimaudit.gradients import FiniteDifferenceJacobian, GradientKind, SourceChoice, make_source
from fimaudit.graph.batching import try_relax_batch
from fimaudit.graph.describe import ModelDescription, describe_model
from fimaudit.graph.loader import LoadedModel, load_model
from fimaudit.graph.selection import (
    LOGITS,
    Selection,
    as_log_probabilities,
    build_logits_model,
    looks_like_probabilities,
    select_input_output,
)
from fimaudit.graph.subnormal import find_subnormals, flush_subnormals
from fimaudit.randomness import RandomStreams
from fimaudit.resources import JACOBIAN_ONLY, MemoryBudget, MemoryPlan, audit_needs, element_count, plan_memory
from fimaudit.results import AuditResult, Bound, SampleResult
from fimaudit.runtime import DEFAULT_TIMEOUT_S, ModelRunner, available_providers
from fimaudit.sample_loop import EIGENVECTORS_KEPT as EIGENVECTORS_KEPT  # re-exported: tests, callers
from fimaudit.sample_loop import LoopContext, all_logits, audit_samples
from fimaudit.sanity import gradient_check
from fimaudit.statistics import summarise
from fimaudit.verdict import judge

if TYPE_CHECKING:  # imported by run_audit only when --attack asks for it (and the bounds when computed)
    from fimaudit.attacks.stage import AttackConfig
    from fimaudit.bounds.background import BackgroundTask
    from fimaudit.bounds.fisher_bound import GlobalStage
    from fimaudit.certify.stage import CertifyConfig
    from fimaudit.graph.architecture import Architecture

logger = logging.getLogger(__name__)

#: Samples differentiated both ways (graph and finite differences) as a sanity check.
GRADIENT_CHECK_SAMPLES = 3

GRADIENT_SOURCES = tuple(kind.value for kind in GradientKind)
# Rows of perturbed inputs per model evaluation when memory allows (finite differences' default).
DEFAULT_BATCH_ROWS = 512

ProgressCallback = Callable[[int, int], None]


@dataclass
class AuditConfig:
    """Everything a user can choose about one audit (the CLI's options, as data)."""

    model_path: str
    data_path: str | None = None
    samples: int | None = None
    method: str = "auto"
    gradients: str = "auto"
    seed: int = 0
    budget: int | None = None
    input_name: str | None = None
    output_name: str | None = None
    threshold: float | None = None
    statistic: str = "max"
    providers: list[str] | None = None
    max_memory: int | None = None
    flush_subnormals: bool = False
    # Analytic certified bounds (fimaudit/bounds) beside the measurement; off skips their cost.
    bounds: bool = True
    # Keep derived results (the bounds' layer gains) in the user cache directory (--no-cache: off).
    cache: bool = True
    # Samples the gradient check compares (the first ones; --check-samples; 0: no check). Its
    # cost is fixed per checked sample and large beside a few Lanczos estimates on ImageNet-size
    # CNNs (VGG-11 at 3x224x224: 35-57 s a checked sample against 5-12 s an audited one).
    check_samples: int = GRADIENT_CHECK_SAMPLES
    # Seconds one model evaluation (one ONNX Runtime run) may take; None: no limit (--timeout).
    timeout: float | None = DEFAULT_TIMEOUT_S
    # Seconds the whole audit may take (--max-time): a finite-difference run whose estimate exceeds
    # it is refused up front, and any run stops between samples once past it. None: no limit.
    max_time: float | None = None
    # What the chosen output is when the graph cannot tell (--output-kind: logits, probabilities,
    # sigmoid); None: read from the graph (graph/selection.py).
    output_kind: str | None = None
    # What is differentiated (--wrt): the float input as given, or the embedding (or one-hot)
    # tensor a token-id model computes (graph/embeddings.py); --vocab decodes the tokens.
    wrt: str = "input"
    vocab_path: str | None = None
    # --attack: the attack stage after the per-sample loop (fimaudit/attacks/stage.py); None: not run.
    attack: AttackConfig | None = None
    # --certify: local certificates after the per-sample loop (fimaudit/certify/stage.py); None: not run.
    certify: CertifyConfig | None = None
    # Real data at scale (issue 13): the image preprocessing spec (--preprocess: text or a JSON
    # file; None: the model's metadata_props), true classes (--labels .npy), the space the verdict
    # reads (--space model|pixel), resumable results (--checkpoint DIR), local worker processes
    # (--workers) or a Dask scheduler's address (--scheduler); fimaudit/sample_loop.py.
    preprocess: str | None = None
    labels_path: str | None = None
    space: str = "model"
    checkpoint_dir: str | None = None
    workers: int = 1
    scheduler: str | None = None


@dataclass
class PreparedModel:
    """A loaded model made ready for differentiation: selection, logits model, runner."""

    loaded: LoadedModel
    description: ModelDescription
    selection: Selection
    logits_model: onnx.ModelProto
    runner: ModelRunner
    num_classes: int


def environment(provider: str) -> dict[str, str]:
    """Versions that decide the numbers: recorded in every report."""
    return {
        "fimaudit": fimaudit.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "provider": provider,
    }


class RunnerOptions(Protocol):
    """What ``prepare_model`` needs of a command's options: how ONNX Runtime runs the model."""

    @property
    def providers(self) -> list[str] | None:
        """The ONNX Runtime execution providers to ask for (None: the default order)."""

    @property
    def timeout(self) -> float | None:
        """Seconds one model run may take before it is stopped (None or 0: no limit)."""


@dataclass(frozen=True)
class RunnerSettings:
    """RunnerOptions for commands that are not an audit (``fimaudit jacobian``)."""

    providers: list[str] | None = None
    timeout: float | None = DEFAULT_TIMEOUT_S


def _make_runner(
    logits_model: onnx.ModelProto, selection: Selection, config: RunnerOptions, extra: dict[str, np.ndarray]
) -> ModelRunner:
    return ModelRunner(
        model=logits_model,
        input_name=selection.input_name,
        output_names=[LOGITS],
        fixed_batch=selection.fixed_batch,
        providers=config.providers,
        extra_feeds=extra,
        timeout=config.timeout,
    )


@dataclass
class Intake:
    """A model read and understood, before anything runs: what ``inspect`` shows."""

    loaded: LoadedModel
    description: ModelDescription
    selection: Selection
    # --wrt embeddings: where the embedding tensor was found (graph/embeddings.py) and the model
    # as loaded (``loaded`` then holds the rewrite whose input is that tensor).
    site: Any = None
    original: onnx.ModelProto | None = None


def intake(
    model_path: str, input_name: str | None = None, output_name: str | None = None, budget: MemoryBudget | None = None,
    wrt: str = "input", output_kind: str | None = None,
) -> Intake:
    """Load, validate and describe the model, and choose its input and output (weights planned against ``budget``)."""
    loaded = load_model(model_path, budget=budget)
    if wrt == "embeddings":  # the embedding tensor becomes the input (fimaudit/tokens.py)
        from fimaudit.tokens import at_embeddings

        moved, selection, site = at_embeddings(loaded, output_name)
        return Intake(moved, describe_model(loaded), selection, site, loaded.proto)
    if wrt != "input":
        raise InputError(f"unknown --wrt {wrt!r}; choose input or embeddings")
    return Intake(loaded, describe_model(loaded), select_input_output(loaded, input_name, output_name, output_kind))


#: FLOPs of a model's average linear kernel (graph/flops.py) up to which the exact route runs
#: gradient rows in parts (``plan_threads``). Measured at 3x32x32, K = 10, 2 cores, exact
#: lambda_max per sample, one pool thread and two 5-row parts against the two-thread pool
#: (scratch prototype, best of 10 over 8 samples; the benchmarks/README table for the kept
#: rule): small ViT (1.3-1.7 MFLOP a kernel) 5.1 -> 3.8 ms, MobileNet-V3 (0.08) 4.4 -> 3.6,
#: DenseNet-121 (1.0) 19.5 -> 15.9, ResNet-18 (3.5) 6.4 -> 6.5 (8.3 against 6.7 in the
#: benchmark), VGG-11-BN (31-50) 61 -> 89: its one-sample forward half wants both threads.
ROW_PARALLEL_MAX_KERNEL_FLOPS = 2e6


def plan_threads(taken: Intake, config: RunnerOptions) -> None:
    """Gradient rows in parts side by side (``ort_threads.prefer_row_parallel``) where that pays.

    Only for an audit whose estimator differentiates many rows per run (``--method exact``, or
    ``auto`` on K <= 64 classes, which picks exact) with gradient graphs, of a model whose
    kernels are small (``ROW_PARALLEL_MAX_KERNEL_FLOPS``): every run has one thread then, so the
    Lanczos and power routes (one row per product) and large kernels keep the shared pool's.
    Decided before the first session exists (the pool is made with it); a no-op after, and in
    processes without a shared pool (library use).
    """
    from fimaudit.fisher.auto import SMALL_CLASS_COUNT
    from fimaudit.graph.flops import linear_work

    method = getattr(config, "method", None)
    if getattr(config, "gradients", "auto") not in ("auto", "graph"):
        return
    if "CUDAExecutionProvider" in (config.providers or available_providers()):
        return  # the pool is the CPU's; a GPU runs a whole run's rows at once
    classes = declared_classes(taken.selection)
    exact_route = method == "exact" or (method == "auto" and classes is not None and classes <= SMALL_CLASS_COUNT)
    if not exact_route:
        return  # no walk over the graph for an audit that would not take the mode
    work = linear_work(taken.loaded.proto)
    if work.nodes and work.mean_flops <= ROW_PARALLEL_MAX_KERNEL_FLOPS:
        ort_threads.prefer_row_parallel()


def prepare_model(
    taken: Intake, config: RunnerOptions, probe: np.ndarray, extra: dict[str, np.ndarray] | None = None
) -> PreparedModel:
    """Build the logits model and a runner for it, settling what only a run can tell.

    ``probe`` (one sample, [1, ...]) shows whether an output without a final Softmax holds
    probabilities, whether a fixed batch dimension can be relaxed, and the number of classes.
    """
    selection = taken.selection
    selection.input_shape = [selection.input_shape[0], *probe.shape[1:]]
    plan_threads(taken, config)
    logits_model = build_logits_model(taken.loaded, selection)
    runner = _make_runner(logits_model, selection, config, extra or {})
    (probe_logits,) = runner.run(probe)
    if (
        selection.output_kind == "logits"
        and selection.logits_source == selection.output_name
        and looks_like_probabilities(probe_logits)
    ):
        selection = as_log_probabilities(selection)
        logits_model = build_logits_model(taken.loaded, selection)
        runner = _make_runner(logits_model, selection, config, extra or {})
        (probe_logits,) = runner.run(probe)
    runner = try_relax_batch(runner, probe)
    num_classes = int(probe_logits.reshape(probe.shape[0], -1).shape[1])
    return PreparedModel(taken.loaded, taken.description, selection, logits_model, runner, num_classes)


def _handle_subnormals(model: onnx.ModelProto, flush: bool) -> dict[str, Any]:
    """Warn about subnormal weights (slow on CPUs); flush them to zero when asked.

    Returns what the report records: a flushed audit did not run the exact file it names.
    """
    found = flush_subnormals(model) if flush else find_subnormals(model)
    if found.count and not flush:
        logger.warning(
            "subnormal weights: %s; CPU inference may be several times slower "
            "(--flush-subnormals sets them to zero for the audit)", found.summary()
        )
    return {"count": found.count, "total": found.total, "flushed": bool(flush and found.count)}


def declared_classes(selection: Selection) -> int | None:
    """K from the output's declared shape (None when a dimension is unknown): planned before any run."""
    shape = selection.output_shape or []
    dims = [d for d in shape[1:] if isinstance(d, int) and d > 0]
    if not shape or len(dims) != len(shape) - 1:
        return None
    classes = element_count(dims)
    return 2 * classes if selection.output_kind == "sigmoid" else classes


def plan_run(
    model: onnx.ModelProto,
    selection: Selection,
    budget: MemoryBudget,
    data: AuditData | None = None,
    num_classes: int | None = None,
    method: str = "auto",
    evaluations: int | None = None,
    bounds: bool = False,
) -> MemoryPlan:
    """Batch sizes that keep a run within ``budget``, or a ResourceError before anything runs.

    Called as soon as each part is known: after intake (weights, the model's fixed-size tensors,
    the K x K arrays when the output declares K), after the data is read (its rows), and after
    the probe run (the real K). Without data, the sample size comes from the declared shape
    (unknown dimensions counted as 1).
    """
    sample_shape: tuple[int, ...]
    if data is not None:
        sample_shape = data.inputs.shape[1:]
        itemsize, samples = data.inputs.dtype.itemsize, int(data.inputs.shape[0])
        if is_streamed(data.inputs):  # mapped or spilled (data/streaming.py): a batch is resident at a time
            samples = min(samples, STREAM_BATCH_ROWS)
    else:
        sample_shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in selection.sample_shape)
        itemsize, samples = np.dtype(selection.input_dtype).itemsize, 0
    needs = audit_needs(
        model, element_count(sample_shape), itemsize, samples, num_classes,
        min_rows=max(2, selection.fixed_batch or 1), method=method, evaluations=evaluations,
        bounds=bounds, batch=selection.input_shape[0] if selection.input_shape else None,
    )
    return plan_memory(needs, budget, preferred_rows=DEFAULT_BATCH_ROWS)


@dataclass
class JacobianReady:
    """A model and its data made ready for Jacobians: what ``prepare_jacobians`` returns."""

    prepared: PreparedModel
    data: AuditData
    plan: MemoryPlan
    choice: SourceChoice


def prepare_jacobians(
    model_path: str,
    data_path: str,
    gradients: str,
    samples: int | None,
    memory: MemoryBudget,
    timeout: float | None,
    on_loaded: Callable[[LoadedModel], None],
    input_name: str | None = None,
    output_name: str | None = None,
    output_kind: str | None = None,
) -> JacobianReady:
    """Load, plan, read the data, prepare and choose the gradient source, as an audit does.

    The start of a command that needs Jacobians but no estimator (``fimaudit jacobian``; ``fimaudit
    attack`` is an audit now): each part is planned against ``memory`` as soon as it is known, and
    ``on_loaded`` sees the loaded model before its data is read (the command refuses there an
    output over one of the model's external-data files).
    """
    taken = intake(model_path, input_name, output_name, budget=memory, output_kind=output_kind)
    on_loaded(taken.loaded)
    declared = declared_classes(taken.selection)
    early = plan_run(taken.loaded.proto, taken.selection, memory, None, declared, JACOBIAN_ONLY)
    data = load_data(
        data_path, taken.selection, samples, 0,
        budget=memory.after(sum(early.needs.held.values()), "the model and its planned arrays"),
    )
    plan_run(taken.loaded.proto, taken.selection, memory, data, declared, JACOBIAN_ONLY)
    prepared = prepare_model(taken, RunnerSettings(timeout=timeout), probe=data.inputs[:1], extra=data.extra_feeds)
    plan = plan_run(prepared.logits_model, prepared.selection, memory, data, prepared.num_classes, JACOBIAN_ONLY)
    prepared.runner.max_batch = min(prepared.runner.max_batch, plan.batch_rows)
    classes = prepared.num_classes
    choice = make_source(gradients, prepared.runner, data.inputs.shape[1:], classes, chunk_rows=plan.batch_rows)
    return JacobianReady(prepared, data, plan, choice)


def _plan_memory(
    prepared: PreparedModel, data: AuditData, budget: MemoryBudget, config: AuditConfig | None = None
) -> MemoryPlan:
    """The plan once the probe run told K (see :func:`plan_run`)."""
    method = config.method if config else "auto"
    return plan_run(
        prepared.logits_model, prepared.selection, budget, data, prepared.num_classes, method,
        config.budget if config else None, bool(config and config.bounds),
    )


def _require_finite(what: str, values: np.ndarray, source: str) -> None:
    """NaN or Inf scores mean a broken model (or inputs far out of range): stop with the reason."""
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise ModelError(
            f"{what} are NaN or Inf on {int(bad.sum())} of {bad.size} samples of {source} (first: "
            f"sample {first}); check the model's weights and the input's scale"
        )


@dataclass
class EarlyBounds:
    """The bounds' global stage running beside the audit, and the architecture it was given."""

    architecture: Architecture
    task: BackgroundTask[GlobalStage]


def _start_bounds(prepared: PreparedModel, data: AuditData, config: AuditConfig) -> EarlyBounds | None:
    """Start the bounds' costly model-wide stage on a thread as soon as the logits model exists.

    Why: it needs only the weights and one input's shapes, and the next stages (gradient graphs,
    their sessions) leave a core idle; ``_analytic_bounds`` collects it (bounds/background.py).
    """
    if not config.bounds:
        return None
    from fimaudit.bounds.fisher_bound import start_global_stage
    from fimaudit.bounds.stored import bound_cache
    from fimaudit.graph.architecture import recognise_architecture

    architecture = recognise_architecture(prepared.loaded.proto, prepared.selection.input_name)
    task = start_global_stage(
        prepared.logits_model, prepared.selection.input_name, LOGITS, data.inputs[0], prepared.num_classes,
        architecture, config.providers, data.extra_feeds, timeout=config.timeout, cache=bound_cache(config.cache),
        model_digest=prepared.loaded.combined_sha256 or prepared.loaded.sha256,
    )
    return EarlyBounds(architecture, task)


def _analytic_bounds(
    prepared: PreparedModel, data: AuditData, logits: np.ndarray, audits: list[SampleResult], config: AuditConfig,
    early: EarlyBounds | None = None,
) -> tuple[dict[str, Any], Bound | None, list[SampleResult]]:
    """Architecture, the certified global bound, and ``audits`` with their per-sample bounds."""
    from fimaudit.bounds.fisher_bound import bound_audit  # analytic bounds (issue 5)
    from fimaudit.bounds.stored import bound_cache
    from fimaudit.graph.architecture import recognise_architecture

    if not config.bounds:
        return recognise_architecture(prepared.loaded.proto, prepared.selection.input_name).to_dict(), None, audits
    measured = [audit.result.value for audit in audits]
    architecture, bound, per_sample = bound_audit(
        prepared.loaded.proto, prepared.logits_model, prepared.selection.input_name, LOGITS,
        data.inputs, logits, measured, config.providers, data.extra_feeds, timeout=config.timeout,
        cache=bound_cache(config.cache), model_digest=prepared.loaded.combined_sha256 or prepared.loaded.sha256,
        early=early.task if early else None, architecture=early.architecture if early else None,
    )
    return (
        architecture,
        bound,
        [dataclasses.replace(audit, bound=entry) for audit, entry in zip(audits, per_sample, strict=True)],
    )


def _certificates(
    config: AuditConfig, prepared: PreparedModel, data: AuditData, audits: list[SampleResult],
    memory: MemoryBudget, progress: ProgressCallback | None = None,
) -> tuple[list[SampleResult], Any]:
    """B(x, eps) per sample and eps, and the certified radius at --fail-above (fimaudit/certify)."""
    from fimaudit.certify.stage import certify_samples

    assert config.certify is not None
    if config.wrt != "input" or config.space != "model":
        raise InputError("--certify certifies the model's own float input: use it without --wrt embeddings and "
                         "--space pixel")
    certify = dataclasses.replace(config.certify, threshold=config.threshold,
                                  memory=memory.limit)
    return certify_samples(certify, prepared.logits_model, prepared.selection.input_name, LOGITS, data.inputs,
                           list(audits), progress)


def run_audit(
    config: AuditConfig,
    progress: ProgressCallback | None = None,
    on_loaded: Callable[[LoadedModel], None] | None = None,
    certify_progress: ProgressCallback | None = None,
    check_progress: ProgressCallback | None = None,
) -> AuditResult:
    """Audit one model: every sample's lambda_max by ``config.method``, summary and verdict.

    ``on_loaded`` sees the loaded model before anything runs (the CLI refuses there an output path
    that is one of the model's external-data files, which only the loader knows).
    ``progress``, ``certify_progress``, ``check_progress``: (done, total) of the samples, the
    certificates and the gradient check's rounds (sanity.round_count a checked sample).
    """
    background: list[EarlyBounds] = []
    try:
        return _run_audit(config, progress, on_loaded, certify_progress, background, check_progress)
    finally:  # a failed or interrupted audit leaves no bound computation running behind it
        for early in background:
            early.task.cancel()


def _run_audit(
    config: AuditConfig,
    progress: ProgressCallback | None,
    on_loaded: Callable[[LoadedModel], None] | None,
    certify_progress: ProgressCallback | None,
    background: list[EarlyBounds],
    check_progress: ProgressCallback | None = None,
) -> AuditResult:
    """``run_audit``'s body; a bound computation it starts goes into ``background``."""
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if config.budget is not None and config.budget <= 0:
        raise InputError(f"--budget must be a positive number of evaluations, got {config.budget}")
    if config.threshold is not None and not np.isfinite(config.threshold):
        raise InputError(f"--fail-above must be a finite number, got {config.threshold}")
    if config.attack is not None and config.wrt != "input":
        raise InputError("--attack perturbs the model's float input; it cannot be combined with --wrt embeddings")
    estimate = get_estimator(config.method)
    memory = MemoryBudget.from_option(config.max_memory)
    # The selection is needed to read the data; a sample is needed to finish the preparation.
    taken = intake(
        config.model_path,
        config.input_name,
        config.output_name,
        budget=memory,
        wrt=config.wrt,
        output_kind=config.output_kind,
    )
    if on_loaded is not None:
        on_loaded(taken.loaded)
    subnormals = _handle_subnormals(taken.loaded.proto, config.flush_subnormals)
    original, site = taken.original, taken.site
    if site is not None and config.bounds:
        logger.info("analytic bounds are not computed in embedding space (the attention mask varies per sample)")
        config = dataclasses.replace(config, bounds=False)
    if config.space == "pixel" and config.bounds:  # the bounds hold in the model's input space
        logger.info("analytic bounds are not computed with --space pixel (they are in the model's input space)")
        config = dataclasses.replace(config, bounds=False)
    # Planned before anything runs: the model's own tensors and, when K is declared, the K x K arrays.
    declared = declared_classes(taken.selection)
    early = plan_run(
        taken.loaded.proto, taken.selection, memory, None, declared, config.method, config.budget, config.bounds
    )
    if site is not None:
        from fimaudit.tokens import load_token_data, read_vocabulary

        assert original is not None  # intake sets the original model together with the site
        data = load_token_data(
            config.data_path, original, taken.loaded.proto, site, config.samples,
            memory.after(sum(early.needs.held.values()), "the model and its planned arrays"),
            config.providers, config.timeout, read_vocabulary(config.vocab_path),
        )
    else:
        data = load_data(
            config.data_path, taken.selection, config.samples, config.seed,
            budget=memory.after(sum(early.needs.held.values()), "the model and its planned arrays"),
            preprocess=config.preprocess, labels_path=config.labels_path,
            metadata={entry.key: entry.value for entry in taken.loaded.proto.metadata_props},
        )
    plan_run(taken.loaded.proto, taken.selection, memory, data, declared, config.method, config.budget, config.bounds)
    prepared = prepare_model(taken, config, probe=data.inputs[:1], extra=data.extra_feeds)
    bounds_started = _start_bounds(prepared, data, config)
    if bounds_started is not None:
        background.append(bounds_started)
    plan = _plan_memory(prepared, data, memory, config)
    prepared.runner.max_batch = min(prepared.runner.max_batch, plan.batch_rows)
    sample_shape = tuple(int(d) for d in data.inputs.shape[1:])  # what prepare_model set the selection to
    choice = make_source(
        config.gradients, prepared.runner, sample_shape, prepared.num_classes, chunk_rows=plan.batch_rows
    )
    jacobian, gradients, note = choice.source, choice.kind, choice.reason
    masked = None
    if data.tokens is not None:  # padded positions masked, each sample's integer inputs fed
        jacobian = masked = data.tokens.wrap(jacobian, prepared.runner.extra_feeds, data.inputs)
    logits = all_logits(jacobian, data.inputs)  # batch by batch, mapped pages released (sample_loop.py)
    _require_finite("the model's scores", logits, data.source)
    from fimaudit.graph.ml_outputs import piecewise_constant_note  # tree ensembles, Binarizer

    flat = piecewise_constant_note(prepared.logits_model, prepared.selection.input_name, LOGITS)
    if flat:
        logger.warning("%s", flat)
        note += f"; {flat}"
    fd_cost, fd_log = None, None
    if gradients == "fd":
        # Cost planned before the first sample (2 d evaluations each for a dense Jacobian).
        fd_cost, clause = plan_finite_differences(
            jacobian.logits, data.inputs[0], config.method, config.budget, data.inputs.shape[0], config.max_time
        )
        note += clause
        fd_log = FdProgressLog(fd_cost)
    # Sample i's estimator draws from its own stream: its result depends on the seed and i only.
    streams = RandomStreams(config.seed)
    # Every sample's lambda_max, in index order: here, in --workers processes or on a --scheduler
    # cluster, or read back from a --checkpoint (fimaudit/sample_loop.py).
    audits: list[SampleResult] = audit_samples(
        LoopContext(config, data, logits, jacobian, masked, prepared, gradients, plan.batch_rows, started, progress,
                    fd_log, estimate)
    )
    check = None
    if gradients == "graph" and config.check_samples > 0:
        # Steps are chosen per direction by the check's error model (sanity.py); the reference
        # source's own step is never changed.
        reference = FiniteDifferenceJacobian(
            prepared.runner, sample_shape, prepared.num_classes, chunk_rows=plan.batch_rows
        )
        if data.tokens is not None:
            reference = data.tokens.wrap(reference, prepared.runner.extra_feeds, data.inputs)
        check = gradient_check(
            jacobian, reference.central_differences, data.inputs, streams.gradient_check(), count=config.check_samples,
            progress=check_progress,
        )
        if check.status == "failed":
            logger.warning("%s: the graph's derivatives disagree beyond the error bound", check.summary())
        else:
            logger.info("%s", check.summary())
    summary = summarise(np.array([audit.value for audit in audits]))
    architecture, bound, audits = _analytic_bounds(prepared, data, logits, audits, config, bounds_started)
    attack = None
    if config.attack is not None:  # issue 11: one stage after every sample's lambda_max is known
        from fimaudit.attacks.stage import attack_stage

        audits, attack = attack_stage(
            config.attack, jacobian, prepared.runner, data.inputs, audits, gradients, config.seed, flat or ""
        )
    certification = None
    if config.certify is not None:  # issue 10: local certificates, one stage after the per-sample loop
        audits, certification = _certificates(config, prepared, data, audits, memory, certify_progress)
    judgement = judge(audits, summary, bound, check, gradients, config.threshold, config.statistic, attack=attack)
    return AuditResult(
        config=config,
        prepared=prepared,
        data=data,
        gradients=gradients,
        gradients_note=note,
        samples=tuple(audits),
        summary=summary,
        checks=judgement.checks,
        verdict=judgement.verdict,
        seconds=time.perf_counter() - started,
        model_evaluations=jacobian.accounting.evaluations,
        environment=environment(prepared.runner.provider),
        started_at=started_at,
        gradient_settings={**jacobian.settings(), **({"fd_cost": fd_cost.to_dict()} if fd_cost else {})},
        gradient_check=check,
        subnormal_weights=subnormals,
        architecture=architecture,
        bound=bound,
        attack=attack,
        certification=certification,
    )
