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
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable, else physical memory), None if unknown."""
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


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes an audit may hold at once, and where that number came from (for messages)."""

    limit: int
    source: str

    @classmethod
    def from_option(cls, max_memory: int | None) -> "MemoryBudget":
        """``--max-memory`` when given, else a share of what the machine has available now."""
        if max_memory is not None:
            return cls(int(max_memory), f"--max-memory is {format_size(max_memory)}")
        available = available_memory()
        if available is None:
            return cls(_FALLBACK_BUDGET, f"the default budget is {format_size(_FALLBACK_BUDGET)} (set --max-memory)")
        limit = int(available * DEFAULT_SHARE)
        return cls(limit, f"{format_size(limit)} is available (set --max-memory to change)")


@dataclass(frozen=True)
class MemoryNeeds:
    """An audit's memory: parts held throughout, and the cost of each evaluated input row."""

    held: dict[str, int]
    per_row: int
    min_rows: int

    @property
    def minimum(self) -> int:
        return sum(self.held.values()) + self.min_rows * self.per_row

    def breakdown(self) -> str:
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


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize if tensor.dims else itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's initializers (weights), as declared by their shapes."""
    return sum(_tensor_bytes(tensor) for tensor in model.graph.initializer)


def activation_bytes_per_row(model: onnx.ModelProto, batch_dim: int | str | None = None) -> int:
    """Bytes of every intermediate tensor for one input row, from (inferred) declared shapes.

    Tensors whose first dimension is the batch count per row; others (shape-less or of unknown
    size) are ignored. Counting every tensor as alive at once over-estimates ONNX Runtime's peak,
    which reuses buffers: the safe side for choosing batch sizes.
    """
    total = 0
    for value in list(model.graph.value_info) + list(model.graph.output):
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if not dims:
            continue
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if any(size is None for size in sizes):
            continue
        first = dims[0]
        rows = first.dim_value if first.HasField("dim_value") and first.dim_value > 0 else 1
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 4
        total += int(np.prod(sizes, dtype=np.int64)) * itemsize // max(1, rows)
    return total


def audit_needs(
    model: onnx.ModelProto,
    sample_size: int,
    itemsize: int,
    samples: int,
    num_classes: int,
    min_rows: int = 2,
) -> MemoryNeeds:
    """Memory of a Jacobian-based audit of ``samples`` inputs of ``sample_size`` elements.

    Per evaluated row: the input row (three copies: the perturbed rows, the batch built from
    them, ONNX Runtime's view), the float64 logits, and the activations twice (a gradient graph
    keeps the forward activations alive for its backward pass; finite differences need only one
    set, so for them this errs on the safe side).
    """
    held = {
        "weights": WEIGHT_COPIES * weight_bytes(model),
        "data": samples * sample_size * itemsize,
        "Jacobian": JACOBIAN_COPIES * num_classes * sample_size * 8,
    }
    per_row = 3 * sample_size * itemsize + 2 * num_classes * 8 + 2 * activation_bytes_per_row(model)
    return MemoryNeeds(held=held, per_row=per_row, min_rows=max(1, min_rows))
