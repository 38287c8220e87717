"""The certifier of one model: B(x, eps) for any sample, radius and norm.

Built once per audit from the logits model (the view, its constants folded); each call runs one
forward and one backward propagation (propagate.py) and composes B (composition.py).

The rows propagated are P J with P = I - 1 e_r^T, r the predicted class at x: the Fisher matrix
only sees J through C^{1/2} J and C^{1/2} 1 = 0, so differences to one class carry all the
information, the reference row is exactly zero (radius 0), and the radii are those of the logit
*differences* the softmax actually reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from fimaudit.certify.composition import Composition, compose
from fimaudit.certify.propagate import InputSet, propagate
from fimaudit.certify.symbols import STACK_LIMIT
from fimaudit.graph.view import GraphView

NORMS = {"2": 2.0, "inf": float("inf")}


@dataclass(frozen=True)
class LocalBound:
    """B(x, eps) with what it is made of, the unstable count and its cost."""

    epsilon: float
    norm: str
    composition: Composition
    unstable: int
    seconds: float

    @property
    def value(self) -> float:
        """B(x, eps)."""
        return self.composition.value


class Certifier:
    """Local Fisher certificates for one logits model (input ``input_name``, output ``logits``)."""

    def __init__(self, model: onnx.ModelProto, input_name: str, logits: str,
                 sample_shape: tuple[int, ...], input_range: tuple[float, float] | None = None,
                 memory: int | None = None) -> None:
        self.view = GraphView.from_model(model, input_name, outputs=[logits], sample_shape=sample_shape)
        self.logits = logits
        self.input_range = input_range or (-np.inf, np.inf)
        self.stack_limit = stack_limit(memory)

    def bound(self, sample: np.ndarray, epsilon: float, norm: str = "2") -> LocalBound:
        """B(x, eps) >= lambda_max(F(x')) for every x' with ||x' - x||_norm <= eps (and in the input range)."""
        started = time.perf_counter()
        x = np.asarray(sample, dtype=np.float64)[None]
        low, high = self.input_range
        inputs = InputSet(x, float(epsilon), NORMS[norm], low, high)
        first = propagate(self.view, self.logits, inputs, reference_differences, self.stack_limit)
        reference = int(np.argmax(first.logits.at))
        composition = compose(first.rows.centre, first.rows.radius, first.logits.at, first.logits.lo, first.logits.hi,
                              first.telescoped, (reference, float(epsilon), NORMS[norm]), first.deviation)
        return LocalBound(float(epsilon), norm, composition, first.unstable, time.perf_counter() - started)


def stack_limit(memory: int | None) -> int:
    """Entries one forward-mode stack may hold within ``memory`` bytes (symbols.py's limit without one).

    A step holds its inputs' stacks, its output's and a bounded im2col chunk: a quarter of the
    budget per stack, in float64, keeps them all within it.
    """
    if memory is None:
        return STACK_LIMIT
    return max(0, min(STACK_LIMIT, int(memory) // (4 * 8)))


def reference_differences(logits: np.ndarray) -> np.ndarray:
    """P = I - 1 e_r^T with r the predicted class (module docstring)."""
    combination = np.eye(logits.size)
    combination[:, int(np.argmax(logits))] -= 1.0
    return combination
