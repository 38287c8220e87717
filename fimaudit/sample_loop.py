"""The per-sample stage of an audit: every sample's lambda_max, in index order, however it is run.

``run_audit`` calls :func:`audit_samples` once; it returns one ``SampleResult`` per sample, in
index order, whether the samples were

- computed here one after another (the default),
- computed by ``--workers N`` local processes or a Dask cluster (``--scheduler``; parallel.py),
- or loaded from a ``--checkpoint`` folder where an earlier, interrupted run left them.

The result is the same in every case (each sample depends on its index only: sample_audit.py).
What this stage keeps per sample is its result (a few hundred bytes: logits, diagnostics) and the
top eigenvectors of only the :data:`EIGENVECTORS_KEPT` most sensitive samples; the inputs stay
where the data layer put them (mapped or spilled, released batch by batch), so memory does not
grow with the samples' size.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import fimaudit
from fimaudit.checkpoint import Checkpoint, data_fingerprint
from fimaudit.data import AuditData, streaming
from fimaudit.data.labels import check_labels
from fimaudit.errors import InputError, ResourceError
from fimaudit.gradients.base import InputJacobian
from fimaudit.parallel import Chunk, WorkerSpec, dask_results, local_results
from fimaudit.pixel_space import SPACES, PixelMap
from fimaudit.results import SampleResult
from fimaudit.sample_audit import SampleAuditor, SampleSettings
from fimaudit.sample_groups import SampleGroups, group_width

if TYPE_CHECKING:  # audit.py imports this module: its types only for the checker
    from fimaudit.audit import AuditConfig, PreparedModel

logger = logging.getLogger(__name__)

#: Samples whose top Fisher eigenvector is kept for the report's pictures.
EIGENVECTORS_KEPT = 8
#: Samples between two releases of the inputs' mapped pages.
RELEASE_EVERY = 64


@dataclass
class LoopContext:
    """What ``run_audit`` has prepared when the per-sample stage starts."""

    config: AuditConfig
    data: AuditData
    logits: np.ndarray
    source: InputJacobian
    masked: Any  # tokens' per-sample source (--wrt embeddings), else None
    prepared: PreparedModel
    gradients: str  # the source that runs: "graph" or "fd"
    chunk_rows: int | None
    started: float
    progress: Callable[[int, int], None] | None = None
    fd_log: Any = None
    #: The estimator this process runs (run_audit's; workers look theirs up by name).
    estimate: Any = None


class EigenvectorKeeper:
    """Keeps the eigenvectors of the ``keep`` largest values seen (a heap: O(log keep) per sample)."""

    def __init__(self, keep: int, on_drop: Callable[[int], None] | None = None) -> None:
        self.keep = keep
        self.heap: list[tuple[float, int, SampleResult]] = []
        self.on_drop = on_drop

    def add(self, sample: SampleResult) -> None:
        """Consider ``sample``; drop the eigenvector of whichever is no longer among the top."""
        if sample.result.eigenvector is None:
            return
        heapq.heappush(self.heap, (sample.result.value, sample.index, sample))
        if len(self.heap) > self.keep:
            _, _, dropped = heapq.heappop(self.heap)
            dropped.result.eigenvector = None
            if self.on_drop is not None:
                self.on_drop(dropped.index)


def all_logits(source: InputJacobian, inputs: np.ndarray) -> np.ndarray:
    """Logits [N, K] of every sample, a block of whole model batches at a time, releasing mapped pages.

    Blocks are multiples of the source's batch (``chunk_rows``), so every model run sees the same
    rows as one call over all the inputs would give it, and the logits are the same numbers.
    """
    total = int(inputs.shape[0])
    batch = source.chunk_rows
    if not streaming.is_streamed(inputs) or not batch or total <= batch:
        return source.logits(inputs)
    row_bytes = int(np.prod(inputs.shape[1:], dtype=np.int64)) * inputs.dtype.itemsize
    block = batch * max(1, streaming.SWEEP_BATCH_BYTES // max(1, batch * row_bytes))
    parts = []
    for start in range(0, total, block):
        parts.append(source.logits(inputs[start : start + block]))
        streaming.release(inputs)
    return np.concatenate(parts)


def pixel_map_for(data: AuditData, space: str) -> PixelMap | None:
    """The preprocessing's pixel map when the data has one; --space pixel without one is refused."""
    if space not in SPACES:
        raise InputError(f"unknown --space {space!r}; choose {' or '.join(SPACES)}")
    if data.preprocess is None:
        if space == "pixel":
            raise InputError(
                "--space pixel needs image data with a preprocessing spec (--data DIR or LIST.csv with "
                "--preprocess); array data has no pixel space"
            )
        return None
    return PixelMap.from_spec(data.preprocess, tuple(int(d) for d in data.inputs.shape[1:]))


def checkpoint_identity(context: LoopContext, settings: SampleSettings) -> dict[str, Any]:
    """What decides the per-sample numbers: a checkpoint made with anything else is refused.

    The memory plan's batch size is not part of it: it follows the memory free at the moment
    (a restart on a busier machine would otherwise be refused), and it only groups rows into
    ONNX Runtime runs; each sample's estimator, stream and products are the same. The sample
    groups' width is (float32 rounding may depend on which samples share a run), but a restart
    takes the checkpoint's width when memory allows it (:func:`_group_width`).
    """
    config, data = context.config, context.data
    return {
        "fimaudit": fimaudit.__version__,
        "model_sha256": context.prepared.loaded.combined_sha256,
        "data": data.source,
        "data_sha256": data_fingerprint(data),
        "samples": int(data.inputs.shape[0]),
        "preprocess": None if data.preprocess is None else data.preprocess.to_dict(),
        "input": context.prepared.selection.input_name,
        "output": context.prepared.selection.output_name,
        "wrt": config.wrt,
        "gradients": context.gradients,
        "method": settings.method,
        "budget": settings.budget,
        "seed": settings.seed,
        "space": settings.space,
        "flush_subnormals": config.flush_subnormals,
        "sample_group": settings.group,
    }


def _label(data: AuditData, index: int) -> int | None:
    return None if data.labels is None else int(data.labels[index])


def _worker_spec(context: LoopContext, settings: SampleSettings) -> WorkerSpec:
    runner = context.prepared.runner
    if context.masked is not None:
        raise InputError("--workers and --scheduler do not support --wrt embeddings yet; audit in one process")
    return WorkerSpec(
        model=runner.model.SerializeToString(),
        input_name=runner.input_name,
        output_names=list(runner.output_names),
        fixed_batch=runner.fixed_batch,
        max_batch=runner.max_batch,
        providers=None if runner.providers is None else list(runner.providers),
        extra_feeds=dict(runner.extra_feeds),
        timeout=runner.timeout,
        gradients=context.gradients,
        sample_shape=tuple(int(d) for d in context.data.inputs.shape[1:]),
        num_classes=context.source.num_classes,
        chunk_rows=context.chunk_rows,
        settings=settings,
    )


def _nothing() -> Generator[SampleResult, None, None]:
    yield from ()


def _computed(
    context: LoopContext, settings: SampleSettings, todo: Sequence[int]
) -> Generator[SampleResult, None, None]:
    """Results of the samples ``todo`` (in order) from the chosen executor, a whole group at a time."""
    config, data = context.config, context.data
    workers, scheduler = config.workers, config.scheduler
    groups = SampleGroups(settings.group, int(data.inputs.shape[0]))

    def make(wanted: Sequence[int]) -> Chunk:
        indices = [index for members, _ in groups.split(wanted) for index in members]
        rows = np.ascontiguousarray(data.inputs[indices])
        streaming.release(data.inputs)
        labels = tuple(_label(data, i) for i in indices)
        return Chunk(tuple(indices), rows, context.logits[indices], labels, frozenset(wanted))

    if not todo:
        return _nothing()
    if scheduler:
        return dask_results(_worker_spec(context, settings), scheduler, make, todo, groups)
    if workers > 1:
        return local_results(_worker_spec(context, settings), workers, make, todo, groups)
    auditor = SampleAuditor(context.source, settings, context.masked, context.estimate)

    def serial() -> Generator[SampleResult, None, None]:
        count = 0
        for members, wanted in groups.split(todo):
            indices = list(members)
            rows = data.inputs[members.start : members.stop]
            labels = [_label(data, i) for i in indices]
            yield from auditor.audit_rows(indices, rows, context.logits[indices], labels, set(wanted))
            count += len(wanted)
            if count >= RELEASE_EVERY:
                streaming.release(data.inputs)
                count = 0

    return serial()


def _group_width(context: LoopContext, planned: int) -> int:
    """The sample groups' width: ``planned`` (sample_groups.group_width), or a checkpoint's if narrower.

    A restart whose memory plan allows no more than before keeps the checkpoint's groups (and
    its numbers); one that allows less is refused by the identity check, naming sample_group.
    """
    folder = context.config.checkpoint_dir
    recorded = Checkpoint.recorded(folder) if folder else None
    stored = recorded.get("sample_group") if recorded else None
    return min(planned, stored) if isinstance(stored, int) and stored >= 1 else planned


def audit_samples(context: LoopContext) -> list[SampleResult]:
    """Every sample's result in index order (see the module doc)."""
    config, data = context.config, context.data
    space = config.space
    width = 1 if context.masked is not None else group_width(context.source, config.method, config.budget)
    settings = SampleSettings(
        config.method, config.budget, config.seed, space, pixel_map_for(data, space), _group_width(context, width)
    )
    check_labels(data.labels, context.source.num_classes, data.source)
    total = int(data.inputs.shape[0])
    checkpoint, done = None, set()
    folder = config.checkpoint_dir
    if folder:
        if data.tokens is not None:  # per-token sensitivity needs every sample's eigenvector, not only the kept ones
            raise InputError("--checkpoint does not support --wrt embeddings yet; audit without it")
        checkpoint = Checkpoint.open(folder, checkpoint_identity(context, settings))
        done = {index for index in checkpoint.done() if index < total}
        if done:
            logger.warning("resuming from %s: %d of %d samples already done", folder, len(done), total)
    computed = _computed(context, settings, [index for index in range(total) if index not in done])
    keeper = EigenvectorKeeper(EIGENVECTORS_KEPT, checkpoint.drop_eigenvector if checkpoint else None)
    local = not (config.scheduler or config.workers > 1)
    try:
        return _gather(context, computed, checkpoint, done, keeper, local, total)
    finally:
        computed.close()  # a failure or Ctrl-C stops the workers now, not when the traceback is freed


def _gather(
    context: LoopContext,
    computed: Generator[SampleResult, None, None],
    checkpoint: Checkpoint | None,
    done: set[int],
    keeper: EigenvectorKeeper,
    local: bool,
    total: int,
) -> list[SampleResult]:
    """Results in index order: loaded from the checkpoint or taken from ``computed``, then recorded."""
    config, data = context.config, context.data
    accounting = context.source.accounting
    audits: list[SampleResult] = []
    evaluations = 0
    for index in range(total):
        if index in done:
            assert checkpoint is not None
            sample = checkpoint.load(index)
        else:
            sample = next(computed)
            if checkpoint is not None:
                checkpoint.save(sample)
        if index in done or not local:  # paid elsewhere: counted as if paid here
            accounting.evaluations += sum(r.model_evaluations for r in sample.spaces.values())
        audits.append(sample)
        evaluations += sum(r.model_evaluations for r in sample.spaces.values())
        if data.tokens is not None:
            data.tokens.record(index, sample.result.eigenvector, tuple(data.inputs.shape[1:]))
        keeper.add(sample)
        if context.progress is not None:
            context.progress(index + 1, total)
        if context.fd_log is not None:
            context.fd_log.sample_done(index + 1, total, evaluations)
        if (
            config.max_time is not None
            and index + 1 < total
            and time.perf_counter() - context.started > config.max_time
        ):
            raise ResourceError(
                f"the audit ran past --max-time {config.max_time:g} s after {index + 1} of {total} samples; "
                "use fewer --samples, a cheaper --method (blackbox), or a larger --max-time"
            )
    return audits
