"""Samples audited by other processes: local workers (``--workers N``) or a Dask cluster (``--scheduler``).

Samples are independent (a sample's result depends on the model, the settings, its values, its
logits and its index: fimaudit/sample_audit.py), so they are shipped in chunks to workers and the
results gathered back in index order. A worker rebuilds the gradient source once from a
:class:`WorkerSpec`, which carries the prepared logits model itself (its bytes: a Dask worker on
another machine needs no copy of the model file or the data), the resolved gradient source and
the settings; each worker process loads the model once and keeps it for every chunk it runs.
A chunk holds whole sample groups (sample_groups.py): a worker computes a group's Jacobians in
the one run every other path makes for that group.

Local workers are ``spawn``-ed processes (never forked: ONNX Runtime's threads do not survive a
fork) running one ONNX Runtime thread each, so N workers use N cores. Dask is imported only when
``--scheduler`` is given (``pip install 'fimaudit[distributed]'``).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from fimaudit.errors import InputError
from fimaudit.results import SampleResult
from fimaudit.sample_audit import SampleAuditor, SampleSettings
from fimaudit.sample_groups import SampleGroups

logger = logging.getLogger(__name__)

#: Chunks in flight per worker: enough to keep it busy, few enough that rows in transit stay small.
IN_FLIGHT_PER_WORKER = 2
#: Most samples per chunk (fewer when there are few samples per worker).
MAX_CHUNK = 16


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to audit samples exactly as this process would."""

    model: bytes
    input_name: str
    output_names: list[str]
    fixed_batch: int | None
    max_batch: int
    providers: list[str] | None
    extra_feeds: dict[str, np.ndarray]
    timeout: float | None
    gradients: str
    sample_shape: tuple[int, ...]
    num_classes: int
    chunk_rows: int | None
    settings: SampleSettings
    digest: str = field(default="", compare=False)

    def with_digest(self) -> WorkerSpec:
        """The spec with its digest (workers cache one auditor per digest)."""
        text = repr(
            (
                self.input_name,
                self.output_names,
                self.fixed_batch,
                self.max_batch,
                self.providers,
                self.gradients,
                self.sample_shape,
                self.num_classes,
                self.chunk_rows,
                self.settings.method,
                self.settings.budget,
                self.settings.seed,
                self.settings.space,
                self.settings.group,
            )
        )
        digest = hashlib.sha256(self.model + text.encode()).hexdigest()
        return WorkerSpec(**{**self.__dict__, "digest": digest})

    def build(self) -> SampleAuditor:
        """The auditor of this spec: its model in ONNX Runtime, its gradient source (once per process)."""
        from fimaudit.gradients import make_source
        from fimaudit.runtime import ModelRunner

        runner = ModelRunner(
            model=onnx.load_from_string(self.model),
            input_name=self.input_name,
            output_names=self.output_names,
            fixed_batch=self.fixed_batch,
            max_batch=self.max_batch,
            providers=self.providers,
            threads=1,
            extra_feeds=self.extra_feeds,
            timeout=self.timeout,
        )
        choice = make_source(self.gradients, runner, self.sample_shape, self.num_classes, chunk_rows=self.chunk_rows)
        return SampleAuditor(choice.source, self.settings)


@dataclass(frozen=True)
class Chunk:
    """Samples shipped together: their indices, values, logits and true classes, and which to audit.

    ``indices`` are whole sample groups (sample_groups.py); ``wanted`` the ones to audit among
    them (all but those a resumed audit has already finished).
    """

    indices: tuple[int, ...]
    rows: np.ndarray
    logits: np.ndarray
    labels: tuple[int | None, ...]
    wanted: frozenset[int]


def run_chunk(auditor: SampleAuditor, chunk: Chunk) -> list[SampleResult]:
    """Audit the wanted samples of ``chunk`` (the same call in every executor)."""
    return auditor.audit_rows(chunk.indices, chunk.rows, chunk.logits, chunk.labels, chunk.wanted)


# ---- worker-side state: one auditor per process (and per spec on long-lived Dask workers) ------

# Per thread: a Dask worker may run several tasks at once in threads, and a gradient source keeps
# per-sample caches that must not be shared between them.
_STATE = threading.local()


def _auditor(spec: WorkerSpec) -> SampleAuditor:
    held = getattr(_STATE, "auditor", None)
    if held is None or held[0] != spec.digest:
        _STATE.auditor = None  # a new audit on a long-lived worker: the previous model is no longer needed
        _STATE.auditor = (spec.digest, spec.build())
    return _STATE.auditor[1]


def _init_local_worker(spec: WorkerSpec) -> None:
    # Ctrl-C reaches the whole process group; the main process decides and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _STATE.spec = spec
    _auditor(spec)


def _local_chunk(chunk: Chunk) -> list[SampleResult]:
    return run_chunk(_auditor(_STATE.spec), chunk)


def _dask_chunk(spec: WorkerSpec, chunk: Chunk) -> list[SampleResult]:
    return run_chunk(_auditor(spec), chunk)


# ---- the main side -----------------------------------------------------------------------------


#: Builds the chunk that audits the given samples (with the rest of their groups).
ChunkMaker = Callable[[Sequence[int]], Chunk]


def chunk_size(count: int, workers: int) -> int:
    """Samples per chunk: about four chunks per worker, at most :data:`MAX_CHUNK`."""
    return max(1, min(MAX_CHUNK, -(-count // (4 * max(1, workers)))))


def _in_order(
    submit: Callable[[Chunk], Future[Any]],
    make: ChunkMaker,
    todo: Sequence[int],
    workers: int,
    cancel: Callable[[], None],
    groups: SampleGroups,
) -> Iterator[SampleResult]:
    """Submit chunks of whole groups with a bounded number in flight; yield results in ``todo`` order."""
    parts = iter(groups.chunks(todo, chunk_size(len(todo), workers)))
    pending: deque[Future[Any]] = deque()
    try:
        for part in parts:
            pending.append(submit(make(part)))
            if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                break
        while pending:
            results = pending.popleft().result()
            following = next(parts, None)
            if following is not None:
                pending.append(submit(make(following)))
            yield from results
    finally:
        if pending:
            cancel()


def local_results(
    spec: WorkerSpec, workers: int, make: ChunkMaker, todo: Sequence[int], groups: SampleGroups
) -> Generator[SampleResult, None, None]:
    """Results of ``todo`` from ``workers`` spawned local processes, in order."""
    spec = spec.with_digest()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_local_worker, initargs=(spec,)
    ) as pool:

        def cancel() -> None:
            """Stop now: queued chunks are dropped and running workers terminated (their results are not wanted)."""
            terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
            if terminate is not None:
                terminate()
                return
            # Before 3.14 the only handle on the workers; taken before shutdown() forgets them.
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()

        yield from _in_order(lambda chunk: pool.submit(_local_chunk, chunk), make, todo, workers, cancel, groups)


def dask_results(
    spec: WorkerSpec, address: str, make: ChunkMaker, todo: Sequence[int], groups: SampleGroups
) -> Generator[SampleResult, None, None]:
    """Results of ``todo`` from the Dask cluster whose scheduler is at ``address``, in order."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs Dask distributed: pip install 'fimaudit[distributed]'") from None
    spec = spec.with_digest()
    try:
        client = Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        workers = max(1, sum(info.get("nthreads", 1) for info in client.scheduler_info()["workers"].values()))
        logger.info("Dask scheduler %s: %d worker threads", address, workers)
        shared = client.scatter(spec, broadcast=True)
        submitted: list[Any] = []

        def submit(chunk: Chunk) -> Any:
            # Rows travel as data, not inside the task graph (Dask warns about large graphs).
            future = client.submit(_dask_chunk, shared, client.scatter(chunk, hash=False), pure=False)
            submitted.append(future)
            return future

        def cancel() -> None:
            client.cancel(submitted)

        yield from _in_order(submit, make, todo, workers, cancel, groups)
