"""Input Jacobians from gradient graphs: the InputJacobian ("graph") run by ONNX Runtime.

The graphs themselves come from ``fimaudit.autodiff`` (rules and the graph walk); this module
runs them and answers the gradient-source interface (``fimaudit.gradients.base``).

The VJP model (``build.build_vjp_model``) maps a batch x [B, ...] and cotangents [M, B, K] to
[M, B, ...]; one-hot cotangents give M rows of every sample's Jacobian in one run. The JVP
model maps tangents [M, B, ...] to [M, B, K] (forward mode, for matrix-free estimators).
Each model runs split in two (``autodiff/kept_forward.py``): the forward half once per sample
(or group of samples), the gradient half per product or chunk of one-hot cotangents; a model
the split cannot type runs combined. Once an estimator announces products, the JVP splits and
both modes read one shared forward half (``autodiff/shared_forward.py``); where the JVP skips
the weight rows a mask zeroes (``autodiff/masked_rows.py``), a VJP model made for products does
too and replaces the first.

Memory: a run with M cotangents over B samples makes ONNX Runtime carry M*B rows through the
backward graph and returns M*B*d values. ``max_rows`` (the audit's planned batch rows) bounds
M*B; for K = 1000 classes and a 3x224x224 input, ``dense`` therefore fills each sample's K x d
Jacobian chunk by chunk and never holds more than one chunk's output besides the result.
Measured (one sample, a Conv-Relu-Flatten-Gemm model with K = 1000 and a 3x224x224 input, CPU):
the float64 result is 1148 MiB; peak RSS above it and the model was about 57 MiB with
max_rows = 32, 470 MiB with 256 and 1240 MiB with 1000 (one chunk's float32 output, M*d*4 bytes,
plus ONNX Runtime's backward buffers for M rows).

Cost accounting (``RunAccounting``, shared with the logits runner): one gradient run over B
samples with M cotangent (or tangent) rows counts ``B + M*B`` evaluations: B forward rows and
M*B gradient rows, each gradient row counted as one forward-sized evaluation (its compute is
about one to two forward passes of the same rows), and one run.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx

from fimaudit import ort_threads
from fimaudit.autodiff import masked_rows
from fimaudit.autodiff.build import (
    COTANGENT,
    INPUT_GRAD,
    OUTPUT_TANGENT,
    TANGENT,
    at_gradient_opset,
    build_jvp_model,
    build_vjp_model,
    missing_rules,
    unsupported_error,
)
from fimaudit.autodiff.fused_gram import MAX_FUSED_WEIGHT_BYTES, FusedGram, fuse_gram
from fimaudit.autodiff.kept_forward import SplitGradientModel, split_gradient_model
from fimaudit.autodiff.probe_shapes import ShapeProbe
from fimaudit.autodiff.shared_forward import share_forward
from fimaudit.errors import ModelError, ModelTimeoutError, UnsupportedOpError
from fimaudit.gradients.base import JacobianCache
from fimaudit.graph.onnx_utils import tensor_bytes
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner, RunAccounting, create_session, run_session_parts

logger = logging.getLogger(__name__)


def _numpy_dtype(session: Any, name: str, default: str) -> np.dtype:
    types = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}
    for value in session.get_inputs():
        if value.name == name:
            return np.dtype(types.get(value.type, default))
    return np.dtype(default)


#: Largest difference, relative to the largest entry, between the folded fused Gram product and
#: vjp then jvp that keeps the fold (``GraphJacobian._fold_agrees``): float32 rounding of the two
#: orders of summation is ~1e-6 (tests/autodiff/test_fused_gram.py compares at 1e-5).
FOLD_TOLERANCE = 1e-4

#: J v calls on one sample that run the combined JVP model before its kept-forward halves take
#: over (``GraphJacobian._jvp_runner``): above the gradient check's few, below an estimator's tens.
KEEP_FORWARD_AFTER = 8

#: The most bytes of the model's largest activation, over all of its rows, that one run of a
#: kept gradient half carries (``GraphJacobian.speed_rows``). Why: rows batched into one run pay
#: off while per-run overheads dominate (3x32x32: VGG-11's J v 8.8 ms a row alone, 2.6 at 80 rows
#: of 0.25 MiB each) and cost once the tensors are large (3x224x224: VGG-11's kept J v 88 ms a
#: row alone, 101 at 2 rows, 156 at 27, with 25 thousand page faults a row; ResNet-18 and
#: DenseNet-121, 3 MiB an activation, are fastest at 2-4 rows and 5-20% slower at 8; measured
#: with benchmarks/gradient_rows.py, benchmarks/README.md). Beyond it the rows run in chunks.
RUN_ACTIVATION_BYTES = 20 << 20


def _run_gradient(session: Any, outputs: list[str], feeds: dict[str, np.ndarray], timeout: float | None) -> list[Any]:
    """One session call; ORT's runtime failures as one ModelError (timeouts pass through)."""
    return _run_gradient_parts(session, outputs, [feeds], timeout)[0]


def _run_gradient_parts(
    session: Any, outputs: list[str], parts: list[dict[str, np.ndarray]], timeout: float | None
) -> list[list[Any]]:
    """Session calls side by side (runtime.run_session_parts); failures worded as ``_run_gradient`` words them."""
    try:
        return run_session_parts(session, outputs, parts, timeout)
    except ModelTimeoutError:
        raise
    except Exception as exc:  # ORT runtime failures: shape mismatch, kernel errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise ModelError(f"ONNX Runtime failed to run the gradient graph: {first}") from exc


def _run_gradient_rows(
    session: Any, outputs: list[str], feeds: dict[str, np.ndarray], seed: str, timeout: float | None
) -> list[Any]:
    """``_run_gradient`` with the seed's rows split into ``ort_threads.row_parallel_parts`` runs side by side.

    The gradient outputs (seed rows first, [M, B, ...]) are joined back in order; any other
    output (the combined model's logits) is the first part's, which every part computes alike.
    """
    rows = feeds[seed].shape[0]
    parts = min(ort_threads.row_parallel_parts(), rows)
    if parts < 2:
        return _run_gradient(session, outputs, feeds, timeout)
    bounds = np.linspace(0, rows, parts + 1).round().astype(int)
    split = [{**feeds, seed: feeds[seed][start:stop]} for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    results = _run_gradient_parts(session, outputs, split, timeout)
    return [
        np.concatenate([result[index] for result in results]) if name != LOGITS else results[0][index]
        for index, name in enumerate(outputs)
    ]


def _data_feeds(runner: ModelRunner, rows: np.ndarray, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The model's data inputs for ``rows``: the audited input and the extra inputs, one per row."""
    feeds = {runner.input_name: rows.astype(dtype, copy=False)}
    for name, value in runner.extra_feeds.items():
        feeds[name] = np.repeat(value[None], rows.shape[0], axis=0)
    return feeds


class _GradientSession:
    """One gradient model in ONNX Runtime, fed like the logits runner (extra inputs repeated)."""

    def __init__(self, model: onnx.ModelProto, runner: ModelRunner, seed: str, result: str) -> None:
        self.session, self.model = create_session(
            model, runner.providers, runner.threads, memory_pattern=runner.uses_memory_pattern
        )
        self.runner = runner
        self.seed = seed
        self.result = result
        self.input_dtype = _numpy_dtype(self.session, runner.input_name, "float32")
        self.seed_dtype = _numpy_dtype(self.session, seed, "float32")

    def run(self, rows: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits [B, K], gradient [M, B, ...]) for inputs [B, ...] and seeds [M, B, ...]."""
        feeds = _data_feeds(self.runner, rows, self.input_dtype)
        feeds[self.seed] = seeds.astype(self.seed_dtype, copy=False)
        outputs = [LOGITS, self.result]
        logits, gradient = _run_gradient_rows(self.session, outputs, feeds, self.seed, self.runner.timeout)
        self.runner.accounting.add(rows.shape[0] * (1 + seeds.shape[0]))
        return logits, gradient


class _ForwardHalf:
    """A forward-half session that holds its outputs for the last rows it ran on.

    Shared by both modes' kept halves once ``GraphJacobian`` has merged them (shared_forward.py).
    Accounting: B evaluations when it runs on B new rows; the run is counted with a gradient half.
    """

    def __init__(self, model: onnx.ModelProto, weights: tuple[onnx.TensorProto, ...], runner: ModelRunner) -> None:
        self.session, _ = create_session(model, runner.providers, runner.threads, weights, runner.uses_memory_pattern)
        self.runner = runner
        self.outputs = [value.name for value in model.graph.output]
        self.input_dtype = _numpy_dtype(self.session, runner.input_name, "float32")
        self._rows = _RowsSeen()
        self._values: dict[str, np.ndarray] = {}

    def values(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The data feeds and every output for ``rows`` (the session runs when they are new)."""
        if self._rows.matches(rows):
            return self._values
        self._rows.forget()
        self._values = {}
        feeds = _data_feeds(self.runner, rows, self.input_dtype)
        outputs = _run_gradient(self.session, self.outputs, feeds, self.runner.timeout)
        self._values = {**feeds, **dict(zip(self.outputs, outputs, strict=True))}
        self._rows.remember(rows)
        self.runner.accounting.evaluations += rows.shape[0]  # B forward rows; the run is counted with the gradient half
        return self._values

    def held(self, rows: np.ndarray) -> dict[str, np.ndarray] | None:
        """The values of ``rows`` when they are the ones held, else None (nothing runs)."""
        return self._values if self._rows.matches(rows) else None


class _KeptForwardSession:
    """A gradient model run in two halves (autodiff/kept_forward.py): the forward once per rows.

    ``run`` has ``_GradientSession.run``'s contract; the forward half runs only when the rows
    differ from the previous call's, and its tensors (one sample's activations: about one
    forward pass's memory, which the combined run held too) are kept until they do.
    Accounting: a forward half counts its B rows when it runs, each gradient half M*B rows and one
    run; so one call on new rows counts what the combined model's run counts (B + M*B, one run),
    and further calls on the same rows only their gradient rows. After ``share`` the forward
    half is one both modes read (its B rows counted once for both).
    """

    def __init__(self, split: SplitGradientModel, runner: ModelRunner, seed: str, result: str,
                 forward: _ForwardHalf | None = None, names: dict[str, str] | None = None) -> None:
        self.forward = forward or _ForwardHalf(split.forward, split.forward_weights, runner)
        self.gradient, _ = create_session(
            split.gradient, runner.providers, runner.threads, split.gradient_weights, runner.uses_memory_pattern
        )
        self.runner = runner
        self.seed = seed
        self.result = result
        self.kept = split.kept
        #: Kept tensor name -> its name among the forward half's values (the same unless shared).
        self.names = names or {name: name for name in split.kept}
        self.input_dtype = self.forward.input_dtype
        self.seed_dtype = _numpy_dtype(self.gradient, seed, "float32")
        # Held for a fused Gram model (``GraphJacobian.gram_product``) only where its weights are
        # small: holding a large model's split would keep its weight protos alive.
        small = sum(tensor_bytes(tensor) for tensor in split.gradient_weights) <= MAX_FUSED_WEIGHT_BYTES
        self.split: SplitGradientModel | None = split if small else None

    def share(self, forward: _ForwardHalf) -> None:
        """Read the kept tensors from ``forward`` (a shared half with the same names) from now on."""
        self.forward = forward

    def logits_of(self, rows: np.ndarray) -> np.ndarray | None:
        """The logits the forward half computed, when its kept tensors are those of ``rows``; else None."""
        values = self.forward.held(rows)
        return None if values is None else values[LOGITS]

    def handed(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The kept tensors of ``rows`` (the forward half runs when they are not held)."""
        return self._kept_of(self.forward.values(rows))

    def _kept_of(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: values[source] for name, source in self.names.items()}

    def run(self, rows: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits [B, K], gradient [M, B, ...]) for inputs [B, ...] and seeds [M, B, ...]."""
        values = self.forward.values(rows)  # once: each call compares the rows bit for bit
        feeds = self._kept_of(values)
        feeds[self.seed] = seeds.astype(self.seed_dtype, copy=False)
        (gradient,) = _run_gradient_rows(self.gradient, [self.result], feeds, self.seed, self.runner.timeout)
        self.runner.accounting.add(rows.shape[0] * seeds.shape[0])
        return values[LOGITS], gradient


def _split(model: onnx.ModelProto, seed: str, result: str) -> SplitGradientModel | None:
    """The kept-forward halves of a gradient model, or None (then the combined model serves)."""
    split = split_gradient_model(model, seed, result, LOGITS)
    if split is None:
        logger.info("gradient graph not split (its logits or result have no known type); it runs combined")
    return split


def _kept_session(
    split: SplitGradientModel | None,
    runner: ModelRunner,
    seed: str,
    result: str,
    shared: tuple[_ForwardHalf, dict[str, str]] | None = None,
) -> _KeptForwardSession | None:
    """The halves' sessions (the forward one ``shared`` when given), or None (then the combined model serves)."""
    if split is None:
        return None
    try:
        return _KeptForwardSession(split, runner, seed, result, *(shared or ()))
    except ModelError as exc:
        logger.info("split gradient graph rejected by ONNX Runtime (%s); it runs combined", exc)
        return None


class GraphJacobian:
    """Logits and exact input derivatives from gradient graphs derived from the ONNX graph."""

    name = "graph"

    def __init__(
        self,
        runner: ModelRunner,
        sample_shape: tuple[int, ...],
        num_classes: int,
        vjp_model: onnx.ModelProto,
        max_rows: int | None = None,
        forward_model: onnx.ModelProto | None = None,
    ) -> None:
        self.runner = runner
        # The model the JVP graph is derived from (already at the gradient opset when graph_source
        # converted it: converting again for the JVP would say so twice); None: the runner's model.
        self._forward_model = forward_model
        self.sample_shape = tuple(sample_shape)
        self.input_size = int(np.prod(sample_shape))
        self.num_classes = num_classes
        self.max_rows = max(1, max_rows or runner.max_batch)
        #: Rows one run of a kept gradient half takes for speed (``RUN_ACTIVATION_BYTES``); at most max_rows.
        self.speed_rows = min(self.max_rows, max(1, RUN_ACTIVATION_BYTES // max(1, runner.largest_activation_bytes)))
        # Dense Jacobians and products alike: the split halves when the split works (the forward
        # half once per group of samples or per sample), else the combined model.
        split = _split(vjp_model, COTANGENT, INPUT_GRAD)
        self._vjp = _kept_session(split, runner, COTANGENT, INPUT_GRAD) or _GradientSession(
            vjp_model, runner, COTANGENT, INPUT_GRAD
        )
        # What the JVP's forward half is merged with once the JVP splits (``_shared_forward``):
        # the VJP's forward half without weights, and those of its weights the base model lacks.
        self._vjp_forward: tuple[onnx.ModelProto, dict[str, onnx.TensorProto]] | None = None
        if split is not None and isinstance(self._vjp, _KeptForwardSession):
            self._vjp_forward = (split.forward, self._weights_beside_base(split.forward_weights))
        del split
        self.dtype = self._vjp.input_dtype
        self.probe = shape_probe(runner, self.sample_shape, self._vjp.input_dtype)
        # The JVP model runs combined until one sample has had KEEP_FORWARD_AFTER runs (see jvp);
        # its proto is held until it has been split (or the split refused). The combined
        # session is made on its first run only (``_combined_jvp``).
        self._jvp: _GradientSession | None = None
        self._jvp_unavailable: str | None = None
        self._jvp_built = False
        self._jvp_model: onnx.ModelProto | None = None
        self._jvp_kept: _KeptForwardSession | None = None
        self._jvp_rows = _RowsSeen()
        self._jvp_runs_on_rows = 0
        self._cached_jacobian = JacobianCache(lambda sample: self.dense(sample[None])[0])
        self._gram: tuple[Any, FusedGram] | None = None  # the fused Gram session and its model
        self._gram_unavailable = False
        # Prefetched samples: their Jacobian and their share of the run's evaluations (``prefetch``).
        self._prefetched: dict[bytes, tuple[np.ndarray, int]] = {}

    @property
    def accounting(self) -> RunAccounting:
        """The runner's count of model evaluations (gradient graphs run through it too)."""
        return self.runner.accounting

    @property
    def chunk_rows(self) -> int:
        """Gradient rows per run (M cotangents x B samples): the memory plan's batch."""
        return self.max_rows

    def settings(self) -> dict[str, Any]:
        """Nothing to record: graph gradients have no step or tolerance to choose."""
        return {}

    @property
    def batch(self) -> int | None:
        """The model's fixed batch size, if it has one (every run then has exactly that many rows)."""
        return self.runner.fixed_batch

    # ---- logits ------------------------------------------------------------------------------
    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits [N, K] (float64): the kept forward's when it ran on these very rows, else the logits model's.

        Why: a sample's Jacobian runs the VJP model's forward half, which computes the logits
        too; asking for them afterwards (the exact route's order in ``benchmarks/speed.py``, and
        any caller differentiating before it reads the scores) then costs no second forward pass.
        Nothing runs on a hit, so no evaluation is counted.
        """
        if isinstance(self._vjp, _KeptForwardSession) and 0 < inputs.shape[0] <= (self.batch or inputs.shape[0]):
            held = self._vjp.logits_of(self._padded(inputs))
            if held is not None:
                return held[: inputs.shape[0]].reshape(inputs.shape[0], -1).astype(np.float64)
        (values,) = self.runner.run_batched(inputs)
        return values.reshape(inputs.shape[0], -1).astype(np.float64)

    # ---- dense Jacobians ---------------------------------------------------------------------
    def _padded(self, rows: np.ndarray) -> np.ndarray:
        """Rows padded (with copies of the last row) to the fixed batch size, if any."""
        if self.batch is None or rows.shape[0] == self.batch:
            return rows
        fill = np.repeat(rows[-1:], self.batch - rows.shape[0], axis=0)
        return np.concatenate([rows, fill])

    @property
    def samples_per_run(self) -> int:
        """Samples whose K one-hot cotangents fit in one gradient run (1 for a fixed batch of 1)."""
        return self.batch or max(1, self.max_rows // self.num_classes)

    def prefetch(self, inputs: np.ndarray) -> None:
        """Compute the Jacobians of several samples together; ``dense`` of any of them then returns them.

        Why: the audit's estimators ask for one sample at a time, but a gradient run over
        B samples x K cotangents keeps the convolutions' matrix products B times wider; measured
        on ResNet-18 (3x32x32, K = 10, 2 threads, interleaved, best of 5): 201 ms a sample one
        at a time, 135 ms four at a time, 116 ms eight at a time. The audit calls it with one
        fixed group of samples at a time (fimaudit/sample_groups.py) before their per-sample
        work; it holds their K x d float64 Jacobians (B x K x d x 8 bytes) until the next call,
        and ``prefetch(inputs[:0])`` lets them go.

        Cost accounting: the run's model evaluations are counted when a sample's Jacobian is
        taken from the store (its share: the run's evaluations split evenly over the samples,
        K + 1 each without padding, as a run of that sample alone), so an estimator that
        measures its own evaluations sees the same count however its Jacobian was computed.
        The runs themselves are counted when they happen.
        """
        self._prefetched = {}
        if not inputs.shape[0]:
            return
        accounting = self.runner.accounting
        before = accounting.evaluations
        jacobians = self._compute_dense(inputs)
        spent, accounting.evaluations = accounting.evaluations - before, before
        count = inputs.shape[0]
        shares = [spent // count + (1 if i < spent % count else 0) for i in range(count)]
        self._prefetched = {
            _row_key(row): (jacobian, share) for row, jacobian, share in zip(inputs, jacobians, shares, strict=True)
        }

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """Jacobians [N, K, d] (float64): prefetched ones as they are, else computed (see ``_compute_dense``)."""
        found = [entry for row in inputs if (entry := self._prefetched.get(_row_key(row))) is not None]
        if not inputs.shape[0] or len(found) < inputs.shape[0]:
            return self._compute_dense(inputs)
        self.runner.accounting.evaluations += sum(share for _, share in found)
        return np.stack([jacobian for jacobian, _ in found])

    def _compute_dense(self, inputs: np.ndarray) -> np.ndarray:
        """Jacobians [N, K, d] (float64): one-hot cotangents, M classes x B samples per run."""
        count = inputs.shape[0]
        k = self.num_classes
        jacobians = np.empty((count, k, self.input_size), dtype=np.float64)
        per_run = self.batch or max(1, min(count, self.max_rows // k))
        for start in range(0, count, per_run):
            rows = self._padded(inputs[start : start + per_run])
            real = min(per_run, count - start)
            width = rows.shape[0]
            classes = max(1, self._rows_per_run(self._vjp) // width)
            for first in range(0, k, classes):
                last = min(k, first + classes)
                seeds = np.zeros((last - first, width, k), dtype=self._vjp.seed_dtype)
                seeds[np.arange(last - first), :, np.arange(first, last)] = 1
                _, gradient = self._vjp.run(rows, seeds)
                chunk = gradient.reshape(last - first, width, self.input_size)[:, :real]
                jacobians[start : start + real, first:last] = chunk.transpose(1, 0, 2)
        return jacobians

    # ---- products ----------------------------------------------------------------------------
    def _one_sample_runs(
        self,
        session: _KeptForwardSession | _GradientSession,
        sample: np.ndarray,
        vectors: np.ndarray,
        seed_shape: tuple[int, ...],
    ) -> np.ndarray:
        """Run ``session`` on one sample with M seed vectors, in chunks; returns [M, prod(out)]."""
        return self._in_chunks(
            sample, vectors, seed_shape, session.seed_dtype, lambda rows, seeds: session.run(rows, seeds)[1],
            self._rows_per_run(session),
        )

    def _rows_per_run(self, session: _KeptForwardSession | _GradientSession) -> int:
        """Gradient rows per run of ``session``: ``speed_rows`` for a kept half, else ``max_rows``.

        A combined model re-runs the forward pass in every run, which only large chunks amortise.
        """
        return self.speed_rows if isinstance(session, _KeptForwardSession) else self.max_rows

    def _in_chunks(
        self,
        sample: np.ndarray,
        vectors: np.ndarray,
        seed_shape: tuple[int, ...],
        seed_dtype: np.dtype,
        run: Callable[[np.ndarray, np.ndarray], np.ndarray],
        max_rows: int,
    ) -> np.ndarray:
        """M seed vectors of one sample, ``max_rows`` per ``run(rows, seeds [M', B, ...])``: [M, prod(out)] float64.

        The seeds go in the sample's row; the other rows of a fixed batch get zeros.
        """
        rows = self._padded(sample[None])
        width = rows.shape[0]
        chunk = max(1, max_rows // width)
        results = []
        for start in range(0, vectors.shape[0], chunk):
            part = vectors[start : start + chunk]
            if width == 1:  # one conversion, no zeroed buffer to copy into
                seeds = part.reshape(part.shape[0], 1, *seed_shape).astype(seed_dtype)
            else:
                seeds = np.zeros((part.shape[0], width, *seed_shape), dtype=seed_dtype)
                seeds[:, 0] = part.reshape(part.shape[0], *seed_shape)
            out = run(rows, seeds)
            results.append(out[:, 0].reshape(part.shape[0], -1).astype(np.float64))
        if len(results) == 1:  # one chunk (every Lanczos product): no second copy
            return results[0]
        return np.concatenate(results) if results else np.zeros((0, 0))

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """J^T u for one sample and cotangents [M, K]: [M, d] (float64), one reverse run per chunk."""
        return self._one_sample_runs(self._vjp, sample, cotangents, (self.num_classes,))

    def _build_jvp_model(self) -> onnx.ModelProto:
        return build_jvp_model(
            with_sample_shape(self._base_model(), self.runner.input_name, self.sample_shape),
            self.runner.input_name,
            LOGITS,
            self.probe,
        )

    def _jvp_available(self) -> bool:
        """Whether J v runs forward-mode graphs: the JVP model is built on the first ask (held until split).

        False when no JVP model can be derived (a rule missing) or ONNX Runtime refused one of
        its sessions (``_combined_jvp``); J v then uses the dense Jacobian.
        """
        if not self._jvp_built and self._jvp_unavailable is None:
            try:
                self._jvp_model = self._build_jvp_model()
                self._jvp_built = True
            except (UnsupportedOpError, ModelError) as exc:
                self._unavailable(exc)
        return self._jvp_unavailable is None

    def _unavailable(self, exc: Exception) -> None:
        self._jvp_unavailable = str(exc)
        self._jvp, self._jvp_kept, self._jvp_model = None, None, None
        logger.warning("forward-mode gradient graph unavailable (%s); J v uses the dense Jacobian", exc)

    def _combined_jvp(self) -> _GradientSession | None:
        """The combined JVP session, made on its first run; None when ONNX Runtime refuses it.

        Why on its first run: a Lanczos audit splits the JVP before its first product
        (``expect_products``) and never runs the combined model, which held VGG-11's weights
        a further time at 3x224x224 (3.6 s to make, 1.3 GiB resident, measured). After the
        split has let its proto go, the model is derived again (``build_jvp_model`` is
        deterministic) and not held.
        """
        if self._jvp is None and self._jvp_available():
            try:
                model = self._jvp_model if self._jvp_model is not None else self._build_jvp_model()
                self._jvp = _GradientSession(model, self.runner, TANGENT, OUTPUT_TANGENT)
            except (UnsupportedOpError, ModelError) as exc:
                self._unavailable(exc)
        return self._jvp

    def _jvp_runner(self, sample: np.ndarray) -> _KeptForwardSession | _GradientSession | None:
        """The combined JVP model, or its kept-forward halves once this sample has had many runs.

        Why not always split: the halves are two more sessions, each with a copy of the weights
        (VGG-11: 491 MiB, seconds to build), and the gradient check makes only a few J v runs
        per sample; a matrix-free estimator makes tens (Lanczos at K = 1000: about 22), and from
        run KEEP_FORWARD_AFTER of one sample on, each of them stops re-running the forward; an
        estimator that says so first (``expect_products``) splits before its first run. The rule
        depends only on the calls for the sample, so every executor makes the same runs. None
        when ONNX Runtime refused the JVP model (then J v uses the dense Jacobian).
        """
        if not self._jvp_rows.matches(sample):
            self._jvp_rows.remember(sample)
            self._jvp_runs_on_rows = 0
        self._jvp_runs_on_rows += 1
        if self._jvp_runs_on_rows <= KEEP_FORWARD_AFTER:
            return self._combined_jvp()
        return self._kept_jvp() or self._combined_jvp()

    def _kept_jvp(self) -> _KeptForwardSession | None:
        """The JVP's kept halves, split on the first call (the proto is let go then, split or not)."""
        if self._jvp_model is not None:
            model, self._jvp_model = self._jvp_model, None
            split = _split(model, TANGENT, OUTPUT_TANGENT)
            # Products skip masked weight rows in the JVP (masked_rows.py); where they do, the VJP
            # can too, with a VJP model made for products (its forward half gathers the rows).
            products = self._product_vjp() if split is not None and masked_rows.rewritten(model) else None
            self._jvp_kept = _kept_session(
                split, self.runner, TANGENT, OUTPUT_TANGENT, self._shared_forward(split, products)
            )
        return self._jvp_kept

    def _product_vjp(self) -> SplitGradientModel | None:
        """The VJP model again with its products skipping masked rows, split; None where none do.

        Why a second VJP model: the first also makes dense Jacobians (one run of K rows at a
        sample), where gathering a weight's rows costs more than it saves; this one serves once
        many products per sample are expected, and replaces the first (``_shared_forward``).
        """
        try:
            model = build_vjp_model(
                with_sample_shape(self._base_model(), self.runner.input_name, self.sample_shape),
                self.runner.input_name,
                LOGITS,
                self.probe,
                skip_masked_rows=True,
            )
        except (UnsupportedOpError, ModelError) as exc:
            logger.info("no VJP model for products (%s); the first one serves", exc)
            return None
        return _split(model, COTANGENT, INPUT_GRAD) if masked_rows.rewritten(model) else None

    def _weights_beside_base(self, weights: tuple[onnx.TensorProto, ...]) -> dict[str, onnx.TensorProto]:
        """Copies of those of ``weights`` the base model has not under the same name and value (rules' constants).

        Copies: a reference to a message inside the assembled gradient model would keep all of
        that model alive (its weights too: 450 MB on VGG-11 at 3x224x224, measured).
        """
        base = self._base_weights()
        extras = {}
        for tensor in weights:
            if base.get(tensor.name) != tensor:
                extras[tensor.name] = onnx.TensorProto()
                extras[tensor.name].CopyFrom(tensor)
        return extras

    def _base_model(self) -> onnx.ModelProto:
        """The model both gradient models are derived from (at the gradient opset when converted)."""
        return self._forward_model or self.runner.model

    def _base_weights(self) -> dict[str, onnx.TensorProto]:
        return {tensor.name: tensor for tensor in self._base_model().graph.initializer}

    def _shared_forward(
        self, jvp: SplitGradientModel | None, products: SplitGradientModel | None = None
    ) -> tuple[_ForwardHalf, dict[str, str]] | None:
        """One forward half for the VJP and the JVP (autodiff/shared_forward.py), or None.

        Why: each product at a sample is a J^T u and a J v; with a forward half each, every sample
        ran the forward pass twice. From here on the VJP reads its kept tensors from the shared
        half too, and its own forward session is let go (the JVP never gets one): as many
        weight copies as before. With ``products`` (``_product_vjp``), the shared half is made
        from that VJP model's forward half and that model replaces the VJP's sessions.
        """
        held, self._vjp_forward = self._vjp_forward, None
        if jvp is None or not isinstance(self._vjp, _KeptForwardSession):
            return None
        first: tuple[onnx.ModelProto, Mapping[str, onnx.TensorProto]]
        if products is not None:
            first = (products.forward, {tensor.name: tensor for tensor in products.forward_weights})
        elif held is not None:
            first = (held[0], ChainMap(held[1], self._base_weights()))
        else:
            return None
        shared = share_forward(first[0], first[1], jvp, LOGITS)
        if shared is None:
            logger.info("the JVP's forward half is not shared with the VJP's; each runs its own")
            return None
        try:
            forward = _ForwardHalf(shared.model, shared.weights, self.runner)
        except ModelError as exc:
            logger.info("shared forward half rejected by ONNX Runtime (%s); each mode runs its own", exc)
            return None
        if products is None:
            self._vjp.share(forward)
            return forward, shared.second_names
        replacement = _kept_session(
            products, self.runner, COTANGENT, INPUT_GRAD, (forward, {name: name for name in products.kept})
        )
        if replacement is None:
            return None
        self._vjp = replacement
        return forward, shared.second_names

    def expect_products(self, sample: np.ndarray) -> None:
        """Many J v runs at ``sample`` follow (``base.expect_products``): the JVP splits now.

        Now, before the sample's first product, so that its forward pass runs once for both
        modes (``_shared_forward``).
        """
        self._jvp_rows.remember(sample)
        self._jvp_runs_on_rows = KEEP_FORWARD_AFTER
        if self._jvp_available():
            self._kept_jvp()

    def gram_product(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray | None:
        """J J^T u for one sample and cotangents [M, K]: [M, K] (float64) in one fused run, or None.

        None where no fused model applies (``autodiff/fused_gram.py``: no kept halves of both
        modes, or weights too large to hold a third time); the caller then runs vjp and jvp.
        Counted as a vjp and a jvp of M rows each, in one run.
        """
        if self._jvp_unavailable is not None:  # refused by ONNX Runtime after the fused model was made
            return None
        fused = self._gram_session(sample)
        if fused is None:
            return None
        session, gram = fused
        vjp, jvp = self._vjp, self._jvp_kept
        assert isinstance(vjp, _KeptForwardSession) and jvp is not None  # as _gram_session checked

        def fused_run(rows: np.ndarray, seeds: np.ndarray) -> np.ndarray:
            feeds = {**vjp.handed(rows), COTANGENT: seeds}
            feeds.update((gram.jvp_inputs[name], value) for name, value in jvp.handed(rows).items())
            (out,) = _run_gradient(session, [gram.result], feeds, self.runner.timeout)
            self.runner.accounting.add(seeds.shape[0] * seeds.shape[1])  # the vjp's rows, one run
            self.runner.accounting.evaluations += seeds.shape[0] * seeds.shape[1]  # and the jvp's
            return out

        return self._in_chunks(sample, cotangents, (self.num_classes,), vjp.seed_dtype, fused_run, self.speed_rows)

    def _gram_session(self, sample: np.ndarray) -> tuple[Any, FusedGram] | None:
        """The fused Gram session, made on the first call where both modes' kept halves exist."""
        if self._gram is not None or self._gram_unavailable:
            return self._gram
        jvp = self._jvp_runner(sample) if self._jvp_available() else None
        vjp = self._vjp
        if not isinstance(jvp, _KeptForwardSession) or not isinstance(vjp, _KeptForwardSession):
            return None  # the JVP may split later (after KEEP_FORWARD_AFTER runs): ask again then
        gram = None
        if vjp.split is not None and jvp.split is not None:
            gram = fuse_gram(vjp.split, jvp.split, INPUT_GRAD, TANGENT, OUTPUT_TANGENT, COTANGENT)
        self._gram = self._fused_session(gram)
        if gram is not None and gram.folded and (self._gram is None or not self._fold_agrees(sample)):
            logger.info("folded patch-embedding Gram refused or disagrees with vjp then jvp; the fused model "
                        "runs unfolded")
            assert vjp.split is not None and jvp.split is not None  # the fold came from them
            self._gram = self._fused_session(fuse_gram(vjp.split, jvp.split, INPUT_GRAD, TANGENT, OUTPUT_TANGENT))
        self._gram_unavailable = self._gram is None
        return self._gram

    def _fused_session(self, gram: FusedGram | None) -> tuple[Any, FusedGram] | None:
        """A session of ``gram``, or None (no fused model, or ONNX Runtime refuses it)."""
        if gram is None:
            return None
        try:
            session, _ = create_session(
                gram.model, self.runner.providers, self.runner.threads, gram.weights, self.runner.uses_memory_pattern
            )
        except ModelError as exc:
            logger.info("fused Gram model rejected by ONNX Runtime (%s); products run vjp then jvp", exc)
            return None
        return session, gram

    def _fold_agrees(self, sample: np.ndarray) -> bool:
        """Whether the folded fused model's product at ``sample`` matches vjp then jvp (``FOLD_TOLERANCE``).

        Why: the fold (autodiff/patch_gram.py) is exact when the graph is what its checks read it
        as; one product compared before the model is kept turns a misreading into the unfolded
        model instead of wrong products. Its runs are not counted: the audit did not ask for them.
        """
        accounting = self.runner.accounting
        counted = (accounting.runs, accounting.evaluations)
        cotangent = np.random.default_rng(0).standard_normal((2, self.num_classes))  # two rows: M > 1 too
        try:
            fused = self.gram_product(sample, cotangent)
            separate = self.jvp(sample, self.vjp(sample, cotangent))
        except ModelError as exc:
            logger.info("folded patch-embedding Gram failed to run (%s)", exc)
            return False
        finally:
            accounting.runs, accounting.evaluations = counted
        scale = float(np.abs(separate).max())
        return fused is not None and bool(np.abs(fused - separate).max() <= FOLD_TOLERANCE * scale)

    def forward_mode_unavailable(self) -> str | None:
        """None when J v runs the forward-mode (JVP) graph; else why it falls back to the reverse graph.

        The gradient check's adjoint identity then has nothing independent to compare. Asked
        before any J v has run, this makes the combined session, so that a model ONNX Runtime
        refuses is known now; once the kept halves exist they answer for it.
        """
        if self._jvp_available() and self._jvp_kept is None:
            self._combined_jvp()
        return self._jvp_unavailable

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """J v for one sample and tangents [M, d]: [M, K] (float64), forward mode."""
        runner = None
        if self._jvp_available():
            if tangents.shape[0] > self.speed_rows:
                # More rows than one run should carry (the gradient check's stacks at 3x224x224):
                # the kept halves, whose chunks do not re-run the forward pass. Decided by the
                # call alone, so every executor makes the same runs.
                self.expect_products(sample)
            runner = self._jvp_runner(sample)
        if runner is None:
            return tangents.astype(np.float64) @ self._cached_jacobian(sample).T
        return self._one_sample_runs(runner, sample, tangents, self.sample_shape)


class _RowsSeen:
    """The rows a kept result belongs to: a private copy, compared bit for bit on every call.

    By value because a caller may pass a new array with the same rows or change its own array
    in place; bit for bit (the entries as unsigned integers of their width), as the bytes key it
    replaced did: NaN matches the same NaN, -0.0 does not match 0.0. The bytes key copied the
    rows twice per call (a 3x224x224 sample: 45 us against 15, some 70 calls per Lanczos run).
    """

    def __init__(self) -> None:
        self._copy: np.ndarray | None = None

    def matches(self, rows: np.ndarray) -> bool:
        held = self._copy
        if held is None or held.shape != rows.shape or held.dtype != rows.dtype:
            return False
        return bool(np.array_equal(_bits(held), _bits(rows)))

    def remember(self, rows: np.ndarray) -> None:
        self._copy = np.array(rows, copy=True, order="C")

    def forget(self) -> None:
        self._copy = None


def _bits(values: np.ndarray) -> np.ndarray:
    """``values`` viewed as unsigned integers of the same width (contiguous; a copy only if it was not)."""
    values = np.ascontiguousarray(values)
    width = values.dtype.itemsize
    return values.view(f"u{width}") if width in (1, 2, 4, 8) else values.view(np.uint8)


def _row_key(row: np.ndarray) -> bytes:
    """A sample's identity for ``prefetch``: its dtype, shape and bytes."""
    return f"{row.dtype.str}{row.shape}".encode() + np.ascontiguousarray(row).tobytes()


def shape_probe(runner: ModelRunner, sample_shape: tuple[int, ...], dtype: np.dtype) -> ShapeProbe:
    """Placeholder inputs for measuring shapes static inference missed (see probe_shapes.py)."""
    return ShapeProbe(
        tuple(sample_shape),
        np.dtype(dtype),
        runner.fixed_batch,
        dict(runner.extra_feeds),
        list(runner.providers or []) or None,
        runner.timeout,
    )


def with_sample_shape(model: onnx.ModelProto, input_name: str, sample_shape: tuple[int, ...]) -> onnx.ModelProto:
    """A copy whose input declares the data's sample shape (the batch axis stays as it is).

    Exporters leave spatial dims symbolic ('?', 'height'); gradient rules of pooling and strided
    convolutions need them static. The gradient model only ever sees samples of this shape, so
    fixing them is exact. Stale intermediate shape hints are dropped and inferred again.
    """
    value = next((v for v in model.graph.input if v.name == input_name), None)
    if value is None or not value.type.tensor_type.HasField("shape"):
        return model
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(sample_shape) + 1:
        return model
    if all(
        dim.HasField("dim_value") and dim.dim_value == size
        for dim, size in zip(list(dims)[1:], sample_shape, strict=True)
    ):
        return model
    specialised = onnx.ModelProto()
    specialised.CopyFrom(model)
    declared = next(v for v in specialised.graph.input if v.name == input_name)
    for dim, size in zip(list(declared.type.tensor_type.shape.dim)[1:], sample_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    first = declared.type.tensor_type.shape.dim[0]
    if first.HasField("dim_value") and first.dim_value <= 0:  # '-1' written as a value: a dynamic batch
        first.Clear()
        first.dim_param = "N"
    del specialised.graph.value_info[:]
    return specialised


def graph_source(runner: ModelRunner, sample_shape: tuple[int, ...], num_classes: int) -> GraphJacobian:
    """A GraphJacobian for the logits model of ``runner``, or UnsupportedOpError saying why not.

    Checks coverage first (every op on the differentiable path has a rule) so an unsupported
    model costs no compute; a gradient graph ONNX Runtime cannot load or run is also refused.
    """
    dtype = _numpy_dtype(runner.session, runner.input_name, "float32")
    try:
        # Converted once here (an old opset is said once), not by each of the three analyses below.
        model = at_gradient_opset(with_sample_shape(runner.model, runner.input_name, tuple(sample_shape)))
        missing = missing_rules(model, runner.input_name, LOGITS, "vjp")
        if missing:
            raise unsupported_error(missing, "vjp")
        vjp_model = build_vjp_model(model, runner.input_name, LOGITS, shape_probe(runner, sample_shape, dtype))
        source = GraphJacobian(runner, sample_shape, num_classes, vjp_model, forward_model=model)
        # One reverse run on a zero input: a graph ONNX Runtime loads but cannot run (its shape
        # arithmetic disagreeing with the ONNX formulas, e.g. a pooling window larger than its
        # input) is a reason to fall back now, not an error halfway through the audit.
        source.vjp(np.zeros(sample_shape, dtype=dtype), np.ones((1, num_classes)))
    except ModelError as exc:
        logger.warning("gradient graph rejected by ONNX Runtime: %s", exc)
        raise UnsupportedOpError(f"the gradient graph could not be loaded or run ({exc})") from exc
    return source
