"""The one place fimaudit talks to ONNX Runtime: providers, batching, evaluation accounting.

Every model evaluation the audit pays for goes through ``ModelRunner.run_batched`` so that the
report can state its cost honestly (``evaluations`` counts input rows, ``runs`` counts calls).

Every ``session.run`` in fimaudit goes through ``run_session``: the run happens in a worker
thread while the main thread waits in short joins, so Ctrl-C and SIGTERM (``Interrupted``, see
interrupts.py) and the time limit (``--timeout``) are noticed while ONNX Runtime computes, and
the run is stopped with ``RunOptions.terminate`` (ONNX Runtime checks the flag between kernels
and between Loop/Scan iterations: a Loop with a 2^62 trip count stops within milliseconds).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from fimaudit import ort_threads
from fimaudit.errors import ModelError, ModelTimeoutError
from fimaudit.graph.onnx_utils import lowest_ir_version_for
from fimaudit.graph.tensor_walk import require_self_contained
from fimaudit.session_weights import SessionPayload, session_payload

logger = logging.getLogger(__name__)

# Privacy: ONNX Runtime (1.32 on Linux) starts Microsoft's 1DS telemetry when its native module
# loads, writing a device id and an event database under $XDG_CACHE_HOME (or ~/.cache)/Microsoft/
# DeveloperTools/.onnxruntime. An auditing tool run on confidential models must not. The storage
# is only avoided by ORT_DISABLE_TELEMETRY=1 set before onnxruntime is imported, which
# fimaudit/__init__.py does; this call also stops the events of a process that imported
# onnxruntime before fimaudit.
ort.disable_telemetry_events()

#: Default time limit of one model evaluation (one ONNX Runtime run), in seconds. A run is one
#: batch (at most a few hundred rows) of a forward or gradient graph: seconds on CPU even for
#: ImageNet-size models, so ten minutes only stops what would never finish (an endless Loop).
DEFAULT_TIMEOUT_S = 600.0
# How often the waiting main thread wakes up to run signal handlers and check the deadline.
_POLL_S = 0.1
# How long a terminated run may take to return (a single long kernel is not interruptible).
_STOP_GRACE_S = 5.0

_IR_TOO_NEW = re.compile(r"max supported IR version: (\d+)", re.IGNORECASE)
_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", re.DOTALL)
# ORT prefixes messages with its status code and, for some, a C++ source location and signature.
_ORT_STATUS = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+ [^\n]*?\) (?=\S)")
_MAX_REASON = 300


def available_providers() -> list[str]:
    """ONNX Runtime providers to use, best first: CUDA when onnxruntime-gpu has it, then CPU."""
    present = ort.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider",) if p in present]
    return preferred + ["CPUExecutionProvider"]


def provider_settings(providers: Sequence[str]) -> list[str | tuple[str, dict[str, str]]]:
    """Providers as ONNX Runtime takes them, with the options fimaudit's accuracy needs.

    CUDA: TF32 off. ONNX Runtime's CUDA provider (from 1.18) runs float32 convolutions and
    matrix products in TF32 on Ampere and newer GPUs by default, a 10-bit mantissa: Jacobians
    off by ~1e-3 where float32 gives 1e-6, and fimaudit promises float32 accuracy.
    """
    settled: list[str | tuple[str, dict[str, str]]] = []
    for provider in providers:
        if provider == "CUDAExecutionProvider" and _version(ort.__version__) >= (1, 18):
            settled.append((provider, {"use_tf32": "0"}))
        else:
            settled.append(provider)
    return settled


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


class _RunThread:
    """A daemon thread that runs one job at a time; idle ones are kept for the next run.

    Reused because starting a thread per run cost 0.1-1 ms, ten times a small model's run.
    """

    _idle: queue.SimpleQueue[_RunThread] = queue.SimpleQueue()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="fimaudit-onnxruntime-run", daemon=True).start()

    @classmethod
    def take(cls) -> _RunThread:
        try:
            return cls._idle.get_nowait()
        except queue.Empty:
            return cls()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def give_back(self) -> None:
        """Called once its job has finished: the thread waits for the next one."""
        self._idle.put(self)

    def _serve(self) -> None:
        while True:
            self._jobs.get()()


def run_session(
    session: ort.InferenceSession,
    output_names: Sequence[str] | None,
    feeds: dict[str, np.ndarray],
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> list[np.ndarray]:
    """``session.run`` that Ctrl-C, SIGTERM and a time limit can stop; None or 0 means no limit.

    Raises ``ModelTimeoutError`` past ``timeout`` seconds, re-raises ``Interrupted`` (or anything
    else raised while waiting) after terminating the run, and ONNX Runtime's own failures as they
    are (callers word them).
    """
    return run_session_parts(session, output_names, [feeds], timeout)[0]


def run_session_parts(
    session: ort.InferenceSession,
    output_names: Sequence[str] | None,
    parts: Sequence[dict[str, np.ndarray]],
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> list[list[np.ndarray]]:
    """``run_session`` on several feeds at once, each in its own worker thread: their outputs, in order.

    Why concurrent: with ``ort_threads.row_parallel_parts`` > 1 every run has one thread, and a
    gradient run's rows split into parts use the cores side by side (ort_threads.py). The time
    limit holds for the parts together; an interrupt or a timeout terminates every part still
    running before it is raised; a part's failure is raised once every part has returned (the
    first failure, in part order).
    """
    results: list[dict[str, object]] = [{} for _ in parts]
    # Waited on instead of Thread.join: Python 3.11's join, interrupted by a signal handler's
    # exception, marks a still-running thread as stopped (bpo-45274), and the process then
    # aborts at exit when the thread comes back from ONNX Runtime ("terminate called ...").
    dones = [threading.Event() for _ in parts]
    runs: list[tuple[ort.RunOptions, threading.Event, _RunThread]] = []

    def work(
        feeds: dict[str, np.ndarray], options: ort.RunOptions, result: dict[str, object], done: threading.Event
    ) -> None:
        try:
            result["outputs"] = session.run(output_names, feeds, options)
        except Exception as exc:  # handed to the waiting thread, which raises it
            result["error"] = exc
        finally:
            done.set()

    limit = timeout if timeout and math.isfinite(timeout) and timeout > 0 else None
    deadline = None if limit is None else time.monotonic() + limit
    timed_out = False
    try:
        # Submitted inside the try: a signal landing right after a submit (before the wait)
        # must still terminate the runs it started, not leave them running behind the exit.
        for feeds, result, done in zip(parts, results, dones, strict=True):
            options = ort.RunOptions()
            options.log_severity_level = 4  # a terminated run is reported by fimaudit, not ORT's logger
            worker = _RunThread.take()
            runs.append((options, done, worker))
            worker.submit(functools.partial(work, feeds, options, result, done))
        for done in dones:
            while not done.is_set():
                wait = _POLL_S
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        timed_out = True
                        break
                done.wait(wait)
            if timed_out:
                break
    except BaseException:  # Interrupted by a signal: stop the runs before unwinding
        _terminate(runs)
        raise
    if timed_out:
        _terminate(runs)
        raise ModelTimeoutError(
            f"a model evaluation ran longer than the limit of {limit:g} s and was stopped; the model "
            "may never finish (e.g. a Loop with a huge trip count), or raise the limit with --timeout"
        )
    for _, _, worker in runs:
        worker.give_back()
    for result in results:
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
    return [result["outputs"] for result in results]  # type: ignore[misc]


def _terminate(runs: Sequence[tuple[ort.RunOptions, threading.Event, _RunThread]]) -> None:
    """Ask ONNX Runtime to stop the runs (all at once) and wait (briefly) until they have."""
    for options, _, _ in runs:
        options.terminate = True
    grace = time.monotonic() + _STOP_GRACE_S
    for _, done, worker in runs:
        if done.wait(max(0.0, grace - time.monotonic())):
            worker.give_back()
        else:  # the thread stays busy with that run; the next run takes a new one
            logger.warning("ONNX Runtime did not stop within %g s (one long kernel); leaving it behind", _STOP_GRACE_S)


#: A model whose largest activation (batch 1) reaches this many bytes runs without ONNX Runtime's
#: memory pattern (``create_session``).
MEMORY_PATTERN_MAX_ACTIVATION_BYTES = 8 << 20


def _session_options(threads: int | None, memory_pattern: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # ALL: its NCHWc layout runs the convolutions (and, since the Conv adjoint is a Conv, their
    # gradients) in MLAS's blocked kernels. An earlier graph lost 2e-3..7e-3 relative accuracy
    # at this level; measured again on onnxruntime 1.32 (ResNet-18, 1000 classes, 3x224x224,
    # against float64 PyTorch): 24 VJP rows 7.9e-7 with ALL, 8.5e-7 with EXTENDED and 8.5e-7
    # with ALL less NchwcTransformer; 2 JVP rows 9.2e-7 either way; the same with the Conv
    # adjoint as ConvTranspose. No optimizer costs accuracy there, so none is disabled; ALL ran
    # the 24 rows in 6.5 s against 8.9 s (benchmarks/README.md, "Speed to the hardware limit").
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # fatal only: fimaudit reports run errors itself, one line
    # Memory (issue 15): no CPU arena. The arena keeps every run's peak and grows in powers of
    # two; measured on a 64 MB MatMul model with 1 MB of activations per row (runs of 300, 20,
    # 450, 10 rows), resident memory stayed at +316..+492 MB after the runs with the arena and
    # went back to the session's own size without it, at the same peak. An arena limit
    # (OrtArenaCfg max_mem) only applies to allocators registered on the process-wide
    # environment (create_and_register_allocator + session.use_env_allocators): registered
    # once per process, it cannot follow each command's --max-memory, so it is not used; the
    # plan (resources.py) bounds the batches instead, and ONNX Runtime's own allocation failure
    # becomes a ModelError.
    options.enable_cpu_mem_arena = False
    # The memory pattern puts all of a run's intermediate tensors in one block. Without the
    # arena that block is a fresh malloc every run, and above glibc's largest mmap threshold
    # (32 MiB) fresh pages: every run faults them in and the kernel zeroes them. VGG-11 at
    # 3x224x224 (12.8 MB activations): 290-450 thousand page faults a sample (22 Lanczos
    # products), 0.9 s of system time; without the pattern each tensor is its own malloc,
    # which glibc serves from its heap once its threshold has grown past them: 60-75 thousand
    # faults, 7-10% less time (benchmarks/README.md). Small models lose 4-12% without the
    # pattern (the 3x32x32 corpus), so only models with large activations give it up.
    options.enable_mem_pattern = memory_pattern
    # Threads (issue 12): a pool of its own without spinning, or the command's shared pool (ort_threads.py).
    ort_threads.configure(options, threads)
    return options


def create_session(
    model: onnx.ModelProto,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    weights: Sequence[onnx.TensorProto] = (),
    memory_pattern: bool = True,
) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    """Create an InferenceSession, lowering a too-new IR version when the opsets allow it.

    ``weights``: initializers held outside ``model`` (``kept_forward.SplitGradientModel``), added
    to its graph for ONNX Runtime; large initializers of either go to it in memory
    (session_weights.py). ``memory_pattern``: False for models with large activations (see
    ``_session_options``, ``MEMORY_PATTERN_MAX_ACTIVATION_BYTES``). Returns the session and the
    model actually loaded (possibly with a lowered IR version; without ``weights``).
    """
    require_self_contained(model, weights)  # ORT would resolve external-data names against the working directory
    settled = provider_settings(list(providers or available_providers()))
    try:
        return _session(session_payload(model, weights), threads, memory_pattern, settled), model
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        message = str(exc)
        opset = _OPSET_TOO_NEW.search(message)
        if opset:
            raise ModelError(
                f"the model imports opset {opset.group(1)} of {opset.group(2)}, but ONNX Runtime "
                f"{ort.__version__} supports up to opset {opset.group(3)}; upgrade onnxruntime or "
                "re-export the model with an older opset"
            ) from exc
        match = _IR_TOO_NEW.search(message)
        if not match:
            raise ModelError(f"ONNX Runtime cannot load the model: {_first_line(message)}") from exc
        max_ir = int(match.group(1))
        needed = lowest_ir_version_for(model)
        if needed > max_ir:
            raise ModelError(
                f"the model's IR version {model.ir_version} is newer than ONNX Runtime "
                f"{ort.__version__} accepts (max {max_ir}) and its opsets need IR {needed}; "
                "upgrade onnxruntime"
            ) from exc
        logger.warning("lowered IR version %d -> %d for ONNX Runtime", model.ir_version, max_ir)
        try:
            session = _session(session_payload(model, weights, ir_version=max_ir), threads, memory_pattern, settled)
        except Exception as exc2:
            raise ModelError(
                f"ONNX Runtime cannot load the model even at IR {max_ir}: {_first_line(str(exc2))}"
            ) from exc2
        lowered = copy.copy(model)
        lowered.ir_version = max_ir
        return session, lowered


def _session(
    payload: SessionPayload,
    threads: int | None,
    memory_pattern: bool,
    providers: list[str | tuple[str, dict[str, str]]],
) -> ort.InferenceSession:
    """One InferenceSession of ``payload`` (its in-memory weights are copied in and can go after)."""
    options = payload.options_with_weights(_session_options(threads, memory_pattern))
    return ort.InferenceSession(payload.serialised, options, providers=providers)


def _first_line(message: str) -> str:
    """ORT's reason on one line, without its status prefix and C++ source location, capped."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    reason = _ORT_SOURCE.sub("", _ORT_STATUS.sub("", lines[0]))
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."


@dataclass
class RunAccounting:
    """What the audit paid: input rows evaluated and session calls made."""

    evaluations: int = 0
    runs: int = 0

    def add(self, rows: int) -> None:
        """Count one run of ``rows`` rows."""
        self.evaluations += rows
        self.runs += 1


@dataclass
class ModelRunner:
    """Runs one model on batches of one input, respecting a fixed batch size if the model has one.

    ``extra_feeds`` holds values for the model's other inputs (one row each, broadcast per batch).
    """

    model: onnx.ModelProto
    input_name: str
    output_names: list[str]
    fixed_batch: int | None = None
    max_batch: int = 256
    providers: Sequence[str] | None = None
    threads: int | None = None
    extra_feeds: dict[str, np.ndarray] = field(default_factory=dict)
    accounting: RunAccounting = field(default_factory=RunAccounting)
    #: Seconds one session call may take (None: no limit); see ``run_session``.
    timeout: float | None = DEFAULT_TIMEOUT_S
    #: ONNX Runtime's memory pattern for this model's sessions and its gradient sessions
    #: (``create_session``); None: kept unless the model's largest activation (batch 1, from its
    #: inferred shapes) reaches ``MEMORY_PATTERN_MAX_ACTIVATION_BYTES``.
    memory_pattern: bool | None = None

    def __post_init__(self) -> None:
        if self.memory_pattern is None:
            self.memory_pattern = self.largest_activation_bytes < MEMORY_PATTERN_MAX_ACTIVATION_BYTES
        self.session, self.model = create_session(
            self.model, self.providers, self.threads, memory_pattern=self.uses_memory_pattern
        )
        self.provider = self.session.get_providers()[0]

    @functools.cached_property
    def largest_activation_bytes(self) -> int:
        """The model's largest activation at batch 1 (``graph/flops.py``): its sessions' speed settings read it."""
        from fimaudit.graph.flops import largest_activation_bytes

        return largest_activation_bytes(self.model)

    @property
    def uses_memory_pattern(self) -> bool:
        """Whether this model's sessions keep ONNX Runtime's memory pattern (settled in ``__post_init__``)."""
        return bool(self.memory_pattern)

    @property
    def batch_size(self) -> int:
        """Rows per run: the model's fixed batch when it has one, else the planned maximum."""
        return self.fixed_batch or self.max_batch

    def _feeds(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {self.input_name: rows}
        for name, value in self.extra_feeds.items():
            feeds[name] = np.repeat(value[None], rows.shape[0], axis=0)
        return feeds

    def run(self, rows: np.ndarray) -> list[np.ndarray]:
        """One session call on exactly these rows (the caller respects the batch size)."""
        try:
            outputs = run_session(self.session, self.output_names, self._feeds(rows), self.timeout)
        except ModelTimeoutError:
            raise
        except Exception as exc:  # ORT runtime failures: shape mismatch, kernel errors
            raise ModelError(f"ONNX Runtime failed to run the model: {_first_line(str(exc))}") from exc
        self.accounting.add(rows.shape[0])
        return outputs

    def run_batched(
        self, inputs: np.ndarray, on_batch: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """Evaluate all rows of ``inputs`` in batches; outputs are concatenated along axis 0."""
        size = self.batch_size
        pieces: list[list[np.ndarray]] = []
        for start in range(0, inputs.shape[0], size):
            pieces.append(self.run(inputs[start : start + size]))
            if on_batch is not None:
                on_batch(min(size, inputs.shape[0] - start))
        return [np.concatenate([piece[i] for piece in pieces], axis=0) for i in range(len(self.output_names))]
