"""The two objects bound propagation carries: a forward ``Box`` and a backward ``Cotangent``.

Why centre *and* box: the backward pass needs the exact Jacobian at x (the centre of the interval
Jacobian), hence every activation's value at x, while the slope ranges need the activation's range
over the whole ball. A ``Box`` holds both: ``at`` (the value at x) and ``lo <= value <= hi`` for
every x' in the set. The first tensor also keeps its ``Ball`` so that the first affine layer can
use the exact image of the ball instead of the image of its bounding box.

Floating point: everything is float64 and every rule widens its results outward by the rounding
error of what it computed (``gamma``), so a box certified here contains the real-arithmetic value
of the model (with its stored weights) for every point of the set. The float32 rounding of an ONNX
Runtime run is a different function and is not what is certified (docs/CERTIFICATES.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_UNIT = 2.0**-53


def gamma(terms: int) -> float:
    """Higham's gamma_n: the relative error bound of a float64 sum or dot product of ``terms`` terms."""
    n = max(int(terms), 1) + 1
    return n * _UNIT / (1.0 - n * _UNIT)


def outward(lo: np.ndarray, hi: np.ndarray, slack: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """[lo - slack, hi + slack], the subtraction and addition themselves rounded outward."""
    return np.nextafter(lo - slack, -np.inf), np.nextafter(hi + slack, np.inf)


@dataclass(frozen=True)
class Ball:
    """{x' : ||x' - centre||_p <= eps}, the set whose image is certified (p = 2 or inf)."""

    centre: np.ndarray
    eps: float
    p: float

    @property
    def dual(self) -> float:
        """Q with 1/p + 1/q = 1: sup over the ball of w . (x' - centre) is eps * ||w||_q."""
        return 1.0 if np.isinf(self.p) else 2.0

    def reshaped(self, shape: tuple[int, ...]) -> Ball:
        """The same ball seen through a reshape (entries unchanged, so the norm is unchanged)."""
        return Ball(self.centre.reshape(shape), self.eps, self.p)

    def transposed(self, perm: tuple[int, ...]) -> Ball:
        """The same ball seen through a transpose (a permutation keeps every l_p norm)."""
        return Ball(np.transpose(self.centre, perm), self.eps, self.p)


@dataclass(frozen=True)
class Box:
    """A tensor over the set: its value ``at`` x, and ``lo <= value(x') <= hi`` for every x' in the set.

    ``ball`` is set only while the tensor is the input itself (up to reshapes and transposes): the
    set is then ``ball`` intersected with [lo, hi].
    """

    at: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    ball: Ball | None = None

    @property
    def mid(self) -> np.ndarray:
        """The box's midpoint (not the value at x: a ReLU moves the box off-centre)."""
        return 0.5 * (self.lo + self.hi)

    @property
    def rad(self) -> np.ndarray:
        """Half the width, rounded up so that [mid - rad, mid + rad] covers [lo, hi]."""
        return np.nextafter(0.5 * (self.hi - self.lo), np.inf)

    @classmethod
    def point(cls, value: np.ndarray) -> Box:
        """A box of one point (a tensor certified exactly)."""
        value = np.asarray(value, dtype=np.float64)
        return cls(value, value, value)

    def intersect(self, lo: np.ndarray, hi: np.ndarray) -> Box:
        """The box met with another certified range of the same tensor (both hold, so does their meet)."""
        return Box(self.at, np.maximum(self.lo, lo), np.minimum(self.hi, hi), self.ball)


@dataclass
class Cotangent:
    """K rows of d(logits)/d(tensor) over the set: ``centre`` at x and ``radius`` >= 0 around it.

    Shapes are ``(K, *tensor_shape)``: row k holds the derivative of logit k (or of the k-th
    propagated combination of logits) with respect to every entry of the tensor.
    """

    centre: np.ndarray
    radius: np.ndarray

    def add(self, other: Cotangent) -> Cotangent:
        """Sum of two contributions to the same tensor (fan-out): centres and radii add."""
        return Cotangent(self.centre + other.centre, (self.radius + other.radius) * (1.0 + gamma(2)))

    def map(self, function: object) -> Cotangent:
        """Centre and radius rearranged by the same shape operation (exact: no arithmetic)."""
        assert callable(function)
        return Cotangent(function(self.centre), function(self.radius))
