"""The memory budget of an audit: what it must hold, and the batch sizes that keep it in budget.

Why a budget of our own: an audit holds the model (several times: the proto, its logits copy and
ONNX Runtime's session), the data, a K x d Jacobian per sample and batches of perturbed inputs
whose activations ONNX Runtime allocates. Only the batches can shrink, so fimaudit estimates
the rest from declared shapes, sizes batches to what is left of ``--max-memory`` (default: most of
the memory available now) and refuses up front, naming the size it would need, when even the
smallest batch cannot fit. The estimates are deliberately generous (every activation counted as
if alive at once): a too-small batch only costs speed, a too-large one costs the machine.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx

from fimaudit.errors import ResourceError

logger = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
# Share of the currently available memory an audit may use when no --max-memory is given.
DEFAULT_SHARE = 0.8
_FALLBACK_BUDGET = 4 << 30
# Copies of the weights alive during an audit: the loaded proto, the logits model, the session.
WEIGHT_COPIES = 3
# float64 K x d arrays per sample: the dense Jacobian, its cache for J^T u, C^(1/2) J.
JACOBIAN_COPIES = 3


def parse_size(text: str) -> int:
    """Bytes from '512M', '2G', '1.5GiB', '64k' or a plain number of bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. 512M, 2G or 1.5GiB")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return int(value)


def format_size(size: float) -> str:
    """'1.0 KiB', '3.2 GiB': sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} EiB" if abs(size) < 1 << 20 else f"2^{int(size).bit_length() + 59} B"


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except (OSError, ValueError):
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_dirs(controller: str | None) -> list[str]:
    """Candidate folders of this process's cgroup (v2 when ``controller`` is None, else v1's)."""
    base = "/sys/fs/cgroup" if controller is None else f"/sys/fs/cgroup/{controller}"
    found = []
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            for line in handle:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                if (controller is None and parts[0] == "0") or (controller and controller in parts[1].split(",")):
                    found.append(os.path.join(base, parts[2].lstrip("/")))
    except OSError:
        pass
    # Inside a container the namespace root is the process's own cgroup.
    return found + [base]


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit, None without a limit.

    v2: memory.max - memory.current; v1: memory.limit_in_bytes - memory.usage_in_bytes.
    """
    for folder in _cgroup_dirs(None):
        limit = _read_int(os.path.join(folder, "memory.max"))
        if limit is not None:
            return max(0, limit - (_read_int(os.path.join(folder, "memory.current")) or 0))
    for folder in _cgroup_dirs("memory"):
        limit = _read_int(os.path.join(folder, "memory.limit_in_bytes"))
        if limit is not None and limit < _UNLIMITED_V1:
            return max(0, limit - (_read_int(os.path.join(folder, "memory.usage_in_bytes")) or 0))
    return None


def _address_space_headroom() -> int | None:
    """RLIMIT_AS's soft limit minus what this process already maps (VmSize), None if unlimited."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    mapped = 0
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - mapped)


# cgroup v1 writes "no limit" as a huge page-aligned number (2^63 - 4096 on x86-64).
_UNLIMITED_V1 = 1 << 62


def memory_limits() -> dict[str, int]:
    """The limits on what this process may still allocate, by name (only those that apply)."""
    limits = {
        "available memory (MemAvailable)": _meminfo(),
        "the cgroup memory limit": _cgroup_headroom(),
        "the address-space limit (RLIMIT_AS)": _address_space_headroom(),
    }
    return {name: int(value) for name, value in limits.items() if value is not None}


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smallest of :func:`memory_limits`, None if unknown."""
    limits = memory_limits()
    return min(limits.values()) if limits else None


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes an audit may hold at once, and where that number came from (for messages)."""

    limit: int
    source: str

    @classmethod
    def from_option(cls, max_memory: int | None) -> MemoryBudget:
        """``--max-memory`` when given, else a share of the tightest real limit.

        The limits are MemAvailable, the cgroup's limit minus its usage, and RLIMIT_AS minus what
        the process maps; the budget's message names the one that decided.
        """
        if max_memory is not None:
            return cls(int(max_memory), f"--max-memory is {format_size(max_memory)}")
        limits = memory_limits()
        if not limits:
            return cls(_FALLBACK_BUDGET, f"the default budget is {format_size(_FALLBACK_BUDGET)} (set --max-memory)")
        deciding = min(limits, key=limits.__getitem__)
        limit = int(limits[deciding] * DEFAULT_SHARE)
        return cls(
            limit,
            f"the default budget is {format_size(limit)}, {DEFAULT_SHARE:.0%} of the "
            f"{format_size(limits[deciding])} left under {deciding} (set --max-memory to change)",
        )

    def after(self, held: int, what: str) -> MemoryBudget:
        """What is left of this budget once ``held`` bytes of ``what`` are counted."""
        if held <= 0:
            return self
        return MemoryBudget(self.limit - held, f"{self.source}, of which {what} take {format_size(held)}")


@dataclass(frozen=True)
class MemoryNeeds:
    """An audit's memory: parts held throughout, and the cost of each evaluated input row."""

    held: dict[str, int]
    per_row: int
    min_rows: int

    @property
    def minimum(self) -> int:
        """The least memory the audit can run in: everything held plus its smallest batch."""
        return sum(self.held.values()) + self.min_rows * self.per_row

    def breakdown(self) -> str:
        """The needs in words (for the message of a refused plan)."""
        parts = [f"{name} {format_size(size)}" for name, size in self.held.items() if size]
        parts.append(f"a batch of {self.min_rows} rows {format_size(self.min_rows * self.per_row)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class MemoryPlan:
    """Batch sizes chosen for a budget: ``batch_rows`` rows per model evaluation."""

    budget: MemoryBudget
    needs: MemoryNeeds
    batch_rows: int
    notes: list[str] = field(default_factory=list)


def plan_memory(needs: MemoryNeeds, budget: MemoryBudget, preferred_rows: int) -> MemoryPlan:
    """The largest batch up to ``preferred_rows`` that fits; ResourceError if none does."""
    if needs.minimum > budget.limit:
        raise ResourceError(
            f"this audit needs at least {format_size(needs.minimum)} ({needs.breakdown()}) but "
            f"{budget.source}; raise --max-memory or audit a smaller input"
        )
    spare = budget.limit - sum(needs.held.values())
    rows = int(min(preferred_rows, spare // max(1, needs.per_row)))
    rows = max(needs.min_rows, rows - rows % needs.min_rows)
    plan = MemoryPlan(budget, needs, rows)
    if rows < preferred_rows:
        logger.info("memory budget: batches of %d rows (%s; %s)", rows, needs.breakdown(), budget.source)
    return plan


def check_fits(what: str, size: int, budget: MemoryBudget, advice: str) -> None:
    """Refuse before allocating ``size`` bytes for ``what`` when they exceed the budget."""
    if size > budget.limit:
        raise ResourceError(f"{what} would need {format_size(size)} but {budget.source}; {advice}")


def element_count(dims: Iterable[int]) -> int:
    """The number of elements of an array of shape ``dims``, as an exact Python int.

    The one size computation of fimaudit: ``np.prod(dims, dtype=np.int64)`` wraps around (a
    declared dimension of 2^62 times 4 made a size check see 0 and pass); Python ints do not.
    A negative dimension is a ValueError.
    """
    count = 1
    for dim in dims:
        dim = int(dim)
        if dim < 0:
            raise ValueError(f"negative dimension {dim}")
        count *= dim
    return count


def array_bytes(dims: Iterable[int], itemsize: int) -> int:
    """Bytes of an array of shape ``dims`` and element size ``itemsize`` (exact, never wraps)."""
    return element_count(dims) * int(itemsize)


def _itemsize(elem_type: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 8  # unknown or string elements: the generous side


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    return array_bytes(tensor.dims, _itemsize(tensor.data_type))


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph (If/Loop/Scan bodies) below it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's stored tensors (initializers and Constant values, in every graph)."""
    total = 0
    for graph in _graphs(model.graph):
        total += sum(_tensor_bytes(tensor) for tensor in graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    total += _tensor_bytes(attribute.t)
    return total


@dataclass(frozen=True)
class ModelTensors:
    """Sizes of a model's intermediate tensors, from the shapes shape inference declared.

    ``fixed``: tensors whose every dimension is known and not the batch axis (ConstantOfShape,
    Expand, Tile or Range outputs of constant shape: ONNX Runtime allocates them whatever the
    batch, or folds them into the session at load time). ``per_row``: tensors whose first axis is
    the batch, per row. ``largest``: the name and size of the largest fixed tensor (for messages).
    ``unknown``: tensors of data-dependent size, which no plan can count (ONNX Runtime's own
    allocation failure is the only bound on them).
    """

    fixed: int
    per_row: int
    largest: tuple[str, int] | None
    unknown: int


def model_tensors(model: onnx.ModelProto, batch: int | str | None = None) -> ModelTensors:
    """Count every typed intermediate tensor and output of ``model`` (graphs and subgraphs).

    ``batch`` is the input's first dimension (a size, a symbolic name, or None: any symbolic
    first dimension is the batch). Every tensor is counted as alive at once: ONNX Runtime reuses
    buffers, so this over-estimates, the safe side for a plan.
    """
    fixed = per_row = unknown = 0
    largest: tuple[str, int] | None = None
    for graph in _graphs(model.graph):
        for value in list(graph.value_info) + list(graph.output):
            if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
                continue
            tensor_type = value.type.tensor_type
            itemsize = _itemsize(tensor_type.elem_type)
            dims = tensor_type.shape.dim
            known = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in dims]
            first = dims[0] if dims else None
            is_batch = first is not None and (
                (isinstance(batch, int) and first.HasField("dim_value") and first.dim_value == batch and batch > 0)
                or (
                    not first.HasField("dim_value")
                    and (batch is None or not isinstance(batch, int) or first.dim_param == batch)
                )
            )
            rest = [size for size in (known[1:] if is_batch else known) if size is not None]
            if len(rest) != len(known) - (1 if is_batch else 0):
                unknown += 1
                continue
            size = array_bytes(rest, itemsize)
            if is_batch:
                per_row += size // batch if isinstance(batch, int) and batch > 1 else size
            else:
                fixed += size
                if largest is None or size > largest[1]:
                    largest = (value.name, size)
    return ModelTensors(fixed, per_row, largest, unknown)


def activation_bytes_per_row(model: onnx.ModelProto, batch_dim: int | str | None = None) -> int:
    """Bytes of every intermediate tensor for one input row (see :func:`model_tensors`)."""
    return model_tensors(model, batch_dim).per_row


#: The "method" of ``fimaudit jacobian``: dense Jacobians only, no estimator.
JACOBIAN_ONLY = "jacobian-only"
# K x K float64 arrays alive at once per method (measured peaks, rounded up; see
# benchmarks/memory_budget.py): exact forms the Gram matrix H H^T and eigh copies it, returns
# the vectors and needs about 2 K^2 of LAPACK workspace (syevd).
EXACT_KK_COPIES = 5
# The blackbox sketch: the eigenproblems of its sample matrices (the smaller side, m or K).
BLACKBOX_SIDE_COPIES = 5
# The certified bounds form the K x K softmax covariance and its eigen-decomposed square root.
BOUNDS_KK_COPIES = 6
# Krylov vectors (ncv <= 20) and the few products around them, of the operator's side length.
KRYLOV_VECTORS = 24


def estimator_needs(method: str, num_classes: int, input_size: int, evaluations: int | None = None) -> dict[str, int]:
    """Dense arrays an estimator builds for one sample, by name (bytes, float64).

    ``evaluations`` is the per-sample budget (model evaluations for blackbox, operator products
    for the others; None for the default).
    """
    k, d = int(num_classes), int(input_size)
    if method == JACOBIAN_ONLY:
        return {}
    if method in ("exact", "auto"):
        return {f"K x K matrices of the exact method (K = {k})": EXACT_KK_COPIES * array_bytes((k, k), 8)}
    if method == "blackbox":
        directions = (evaluations or 400) // 2
        side = min(directions, k)
        return {
            f"the black-box sketch ({directions} directions x K = {k})": 3 * array_bytes((directions, k), 8)
            + BLACKBOX_SIDE_COPIES * array_bytes((side, side), 8),
        }
    if method == "hutchinson":
        products = evaluations or 60
        return {f"the trace estimator's {products} probe vectors": 4 * array_bytes((products, d + k), 8)}
    return {f"the {method} vectors": KRYLOV_VECTORS * array_bytes((d + k,), 8)}


def audit_needs(
    model: onnx.ModelProto,
    sample_size: int,
    itemsize: int,
    samples: int,
    num_classes: int | None,
    min_rows: int = 2,
    method: str = "auto",
    evaluations: int | None = None,
    bounds: bool = False,
    batch: int | str | None = None,
) -> MemoryNeeds:
    """Memory of a Jacobian-based audit of ``samples`` inputs of ``sample_size`` elements.

    Held throughout: the weights (WEIGHT_COPIES), the data, the model's fixed-size intermediate
    tensors (twice: the forward session and a gradient graph's), and, once the number of classes
    K is known (None before the probe run), the float64 K x d Jacobians and the estimator's K x K
    or K-sized arrays. Per evaluated row: the input row (three copies: the perturbed rows, the
    batch built from them, ONNX Runtime's view), the float64 logits, and the per-row activations
    twice (a gradient graph keeps the forward activations alive for its backward pass).
    """
    tensors = model_tensors(model, batch)
    fixed_label = "fixed-size model tensors"
    if tensors.largest and tensors.largest[1]:
        fixed_label += f" (largest {tensors.largest[0]!r}: {format_size(tensors.largest[1])})"
    held = {
        "weights": WEIGHT_COPIES * weight_bytes(model),
        "data": samples * sample_size * itemsize,
        fixed_label: 2 * tensors.fixed,
    }
    classes = int(num_classes or 0)
    if classes:
        held["Jacobian"] = JACOBIAN_COPIES * array_bytes((classes, sample_size), 8)
        held.update(estimator_needs(method, classes, sample_size, evaluations))
        if bounds:
            held[f"K x K covariance of the certified bounds (K = {classes})"] = BOUNDS_KK_COPIES * array_bytes(
                (classes, classes), 8
            )
    per_row = 3 * sample_size * itemsize + 2 * classes * 8 + 2 * tensors.per_row
    return MemoryNeeds(held=held, per_row=per_row, min_rows=max(1, min_rows))
