"""Plain forward runs through the audit's runner: the only evidence an attack result rests on.

``Forward`` casts rows to the model's input type, clips them to the input range when one is
given, pads them to a fixed batch when the model has one, and runs them with ``runner.run`` (the
same ONNX Runtime session the audit uses). ``verify`` re-runs candidate adversarial examples and
measures the perturbation that was actually applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fimaudit.attacks.result import Norm, perturbation_norm
from fimaudit.runtime import ModelRunner


@dataclass(frozen=True)
class InputRange:
    """The valid input values ``[low, high]`` (``--input-range LO,HI``); examples are clipped to it."""

    low: float
    high: float

    def __post_init__(self) -> None:
        """Refuse an empty or non-finite range."""
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"the input range must be finite with LO < HI, got {self.low}, {self.high}")

    def clip(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` clipped into the range (same dtype)."""
        return np.clip(rows, self.low, self.high)


@dataclass(frozen=True)
class Verified:
    """Forward-run evidence on candidate examples: applied inputs, predictions and norms."""

    applied: np.ndarray
    classes: np.ndarray
    norms: np.ndarray
    adversarial: np.ndarray


class Forward:
    """Forward runs of the logits model on rows of one input, cast and clipped as applied."""

    def __init__(self, runner: ModelRunner, dtype: np.dtype, input_range: InputRange | None = None) -> None:
        self.runner = runner
        self.dtype = np.dtype(dtype)
        self.input_range = input_range
        self.evaluations = 0

    def applied(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as the model receives them: clipped to the range, then cast to its input type."""
        values = np.asarray(rows, dtype=np.float64)
        if self.input_range is not None:
            values = self.input_range.clip(values)
        applied = values.astype(self.dtype)
        if self.input_range is not None:  # the cast may round just outside the range
            applied = self.input_range.clip(applied).astype(self.dtype)
        return applied

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """Logits [N, K] (float64) of ``rows`` already applied, by ``runner.run`` in padded batches."""
        size = self.runner.batch_size
        pieces = []
        for start in range(0, rows.shape[0], size):
            chunk = rows[start : start + size]
            real = chunk.shape[0]
            if self.runner.fixed_batch and real < self.runner.fixed_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.runner.fixed_batch - real, axis=0)])
            (values,) = self.runner.run(np.ascontiguousarray(chunk))
            self.evaluations += chunk.shape[0]
            pieces.append(np.asarray(values, dtype=np.float64).reshape(chunk.shape[0], -1)[:real])
        return np.concatenate(pieces) if pieces else np.empty((0, 0))

    def classes(self, rows: np.ndarray) -> np.ndarray:
        """Predicted classes of ``rows`` already applied."""
        return self.logits(rows).argmax(axis=1)

    def verify(self, origin: np.ndarray, candidates: np.ndarray, original_class: int, norm: Norm) -> Verified:
        """Re-run ``candidates`` [M, ...] as applied; norms of what was applied, measured from ``origin``.

        ``origin`` is the sample as the model receives it (the model's input type).
        """
        applied = self.applied(candidates)
        classes = self.classes(applied)
        delta = applied.astype(np.float64) - np.asarray(origin, dtype=np.float64)[None]
        norms = perturbation_norm(delta, norm)
        return Verified(applied, classes, norms, classes != original_class)
