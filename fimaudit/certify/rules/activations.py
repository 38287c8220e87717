"""Element-wise activations: value ranges forward, slope ranges backward.

Every activation is a scalar function f with its derivative f'. Over an input range [lo, hi]:
- value range: min and max of f at the endpoints and at the interior critical points of f
  (f is continuous, so these are its extremes on the interval);
- slope range: the same for f' with the critical points of f' and, for piecewise functions,
  both one-sided limits at every break point.
The backward pass sends a row (c, r) through a slope s' in [s_lo, s_hi] with s0 = f'(x) at the
point: s' g' - s0 c = s0 (g' - c) + (s' - s0) g', so |.| <= |s0| r + m (|c| + r) with
m = max(s_hi - s0, s0 - s_lo). A ReLU on (off) over the whole set has s_lo = s_hi and m = 0:
exactly the chain rule at x. Entries with s_lo < s_hi are counted as *unstable*.
Transcendental functions are evaluated by numpy to a few ulps; ranges are widened by ``_ULPS``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from fimaudit.certify.intervals import Box, Cotangent, gamma, outward
from fimaudit.certify.registry import CertifyRule, NodeContext, Relaxation, certify_rule

_ULPS = 16 * 2.0**-53
_TINY = 1e-300


def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    slack = _ULPS * np.maximum(np.abs(lo), np.abs(hi)) + _TINY
    return outward(lo, hi, slack)


def _extremes(function, lo: np.ndarray, hi: np.ndarray, points: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``function`` over {lo, hi} and the ``points`` inside [lo, hi]."""
    low = np.minimum(function(lo), function(hi))
    high = np.maximum(function(lo), function(hi))
    for point in points:
        inside = (lo <= point) & (point <= hi)
        if inside.any():
            value = float(function(np.array(point)))
            low = np.where(inside, np.minimum(low, value), low)
            high = np.where(inside, np.maximum(high, value), high)
    return low, high


class PointwiseRule(CertifyRule):
    """f applied entry by entry (module docstring); subclasses define f, f' and their special points."""

    #: interior critical points of f (where its extremes on an interval can be)
    value_points: tuple[float, ...] = ()
    #: interior critical points of f' and break points (both one-sided limits are taken there)
    slope_points: tuple[float, ...] = ()

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """f(z)."""
        raise NotImplementedError

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """f'(z) (at a kink: one of the one-sided derivatives)."""
        raise NotImplementedError

    def slope_limits(self, ctx: NodeContext, point: float) -> tuple[float, ...]:
        """F' at ``point`` and its one-sided limits there (a smooth f' has just one value)."""
        return (float(self.slope(ctx, np.array(point))),)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The range of f over [lo, hi], element-wise."""
        return _widen(*_extremes(lambda z: self.value(ctx, z), lo, hi, self.value_points))

    def slope_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The range of f' over [lo, hi], element-wise."""
        low, high = _extremes(lambda z: self.slope(ctx, z), lo, hi, ())
        for point in self.slope_points:
            inside = (lo <= point) & (point <= hi)
            if inside.any():
                for value in self.slope_limits(ctx, point):
                    low = np.where(inside, np.minimum(low, value), low)
                    high = np.where(inside, np.maximum(high, value), high)
        return _widen(low, high)

    def forward(self, ctx: NodeContext) -> list[Box]:
        """F at x and f's range over the box; the slope ranges are kept for the backward pass."""
        box = ctx.box(0)
        lo, hi = self.value_range(ctx, box.lo, box.hi)
        s_lo, s_hi = self.slope_range(ctx, box.lo, box.hi)
        ctx.state["slopes"] = (self.slope(ctx, box.at), s_lo, s_hi)
        return [Box(self.value(ctx, box.at), lo, hi)]

    def kinks(self, ctx: NodeContext) -> tuple[float, ...]:
        """Where the slope jumps (none for a smooth activation)."""
        return ()

    def unstable(self, ctx: NodeContext) -> int:
        """Entries whose input range over the set reaches a kink (a ReLU that can switch)."""
        box = ctx.box(0)
        moving = box.hi > box.lo
        reached = np.zeros(box.at.shape, dtype=bool)
        for point in self.kinks(ctx):
            reached |= (box.lo <= point) & (point <= box.hi)
        return int(np.count_nonzero(reached & moving))

    def spreads(self, ctx: NodeContext) -> list[tuple[int, np.ndarray]] | None:
        """max(s_hi - s0, s0 - s_lo) per entry."""
        s0, s_lo, s_hi = ctx.state["slopes"]
        return [(0, np.maximum(np.maximum(s_hi - s0, s0 - s_lo), 0.0))]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """The same diagonal map as ``backward`` (the Jacobian of an activation is diagonal)."""
        rows = ins[0]
        assert rows is not None
        return self.backward(ctx, rows)[0]

    def remainders(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray] | None:
        """[low, high] of f(u) - f(x) - f'(x) (u - x) over the input range, entry by entry.

        symbols.py bounds an activation's value against its linearisation at x with it. In
        general the mean value theorem: +- m max(hi - x, x - lo), m the slope's largest move.
        """
        box = ctx.box(0)
        s0, s_lo, s_hi = ctx.state["slopes"]
        move = np.maximum(np.maximum(s_hi - s0, s0 - s_lo), 0.0)
        reach = np.maximum(box.hi - box.at, box.at - box.lo)
        bound = np.nextafter(move * reach * (1.0 + gamma(2)), np.inf)
        return -bound, bound

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """The slopes at x times the stack."""
        stack = ins[0]
        assert stack is not None
        return ctx.state["slopes"][0] * stack

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """(s0 c, |s0| r + m (|c| + r)), rounded up."""
        s0, s_lo, s_hi = ctx.state["slopes"]
        spread = 0.0 if ctx.state.get("centre_only") else np.maximum(np.maximum(s_hi - s0, s0 - s_lo), 0.0)
        centre = s0 * out.centre
        radius = np.abs(s0) * out.radius + spread * (np.abs(out.centre) + out.radius)
        return {0: Cotangent(centre, radius * (1.0 + gamma(3)))}


class PiecewiseLinear(PointwiseRule):
    """An activation with constant slopes between break points: exact ranges, no ulp widening needed."""

    def kinks(self, ctx: NodeContext) -> tuple[float, ...]:
        """The break points."""
        return self.slope_points

    def slope_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slopes at the endpoints and both limits at every break point inside."""
        low, high = _extremes(lambda z: self.slope(ctx, z), lo, hi, ())
        for point in self.slope_points:
            inside = (lo <= point) & (point <= hi)
            for value in self.slope_limits(ctx, point):
                low = np.where(inside, np.minimum(low, value), low)
                high = np.where(inside, np.maximum(high, value), high)
        return low, high


@certify_rule("Relu")
class ReluRule(PiecewiseLinear):
    """max(z, 0): slope 1 where certified positive, 0 where certified negative, else [0, 1]."""

    slope_points = (0.0,)

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """max(z, 0)."""
        return np.maximum(z, 0.0)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Monotone and exact in floating point."""
        return np.maximum(lo, 0.0), np.maximum(hi, 0.0)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """1 for z > 0, else 0."""
        return (z > 0).astype(np.float64)

    def slope_limits(self, ctx: NodeContext, point: float) -> tuple[float, ...]:
        """0 from the left, 1 from the right."""
        return (0.0, 1.0)

    def remainders(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray] | None:
        """Exactly the overshoot past the kink, and one-signed: [0, max(0, -lo)] on at x, [0, max(0, hi)] off.

        relu(u) - relu(x) - s0 (u - x) is relu(u) - u = max(0, -u) on, relu(u) off: smaller than the
        mean-value bound by x itself, which is what a barely unstable ReLU's range is mostly made of;
        and never negative, so symbols.py centres it (half the width, plus a known shift).
        """
        box = ctx.box(0)
        on = ctx.state["slopes"][0] > 0
        high = np.where(on, np.maximum(-box.lo, 0.0), np.maximum(box.hi, 0.0))
        return np.zeros_like(high), high

    def relaxation(self, ctx: NodeContext) -> Relaxation:
        """The chord above and a line through the kink below (``kink_relaxation`` with alpha 0)."""
        return kink_relaxation(ctx, 0.0)


@certify_rule("LeakyRelu")
class LeakyReluRule(PiecewiseLinear):
    """z for z > 0, alpha z otherwise."""

    slope_points = (0.0,)

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """The leaky ReLU."""
        return np.where(z > 0, z, ctx.attr_float("alpha", 0.01) * z)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Monotone (alpha >= 0) or the endpoints and 0 (alpha < 0)."""
        low, high = _extremes(lambda z: self.value(ctx, z), lo, hi, (0.0,))
        return _widen(low, high)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """1 or alpha."""
        return np.where(z > 0, 1.0, ctx.attr_float("alpha", 0.01))

    def slope_limits(self, ctx: NodeContext, point: float) -> tuple[float, ...]:
        """Alpha from the left, 1 from the right."""
        return (ctx.attr_float("alpha", 0.01), 1.0)

    def relaxation(self, ctx: NodeContext) -> Relaxation | None:
        """``kink_relaxation`` where the function is convex (alpha <= 1); None otherwise."""
        alpha = ctx.attr_float("alpha", 0.01)
        return kink_relaxation(ctx, alpha) if alpha <= 1.0 else None


def kink_relaxation(ctx: NodeContext, alpha: float) -> Relaxation:
    """Lines bounding r(z) = f(z) - f'(z0) z for f(z) = max(z, alpha z), alpha <= 1, over [lo, hi].

    f(z0) = f'(z0) z0 (f is positively homogeneous), so r is the remainder against the
    linearisation at x. f is convex: below its chord, f(z) <= f(lo) + k (z - lo) with
    k = (f(hi) - f(lo)) / (hi - lo); above every line a z with alpha <= a <= 1 through the kink.
    The lower line takes a = 1 where hi >= -lo and a = alpha otherwise (CROWN's choice: the line
    closer to f over the larger part of the range). Where the range does not cross the kink, f is
    linear on it and r = (that slope - f'(z0)) z exactly (both lines coincide; the slopes differ
    only when z0 sits on the kink). The chord's intercept is raised by 1e-12 (|lo| + |hi|)
    for its own rounding.
    """
    box = ctx.box(0)
    s0 = ctx.state["slopes"][0]
    lo, hi = box.lo, box.hi
    crossing = (lo < 0.0) & (hi > 0.0)
    f_lo = np.where(lo > 0.0, lo, alpha * lo)
    f_hi = np.where(hi > 0.0, hi, alpha * hi)
    span = np.where(crossing, hi - lo, 1.0)
    side = np.where(lo >= 0.0, 1.0, alpha)  # the one slope of a range that does not cross the kink
    chord = np.where(crossing, (f_hi - f_lo) / span, side)
    intercept = np.where(crossing, f_lo - chord * lo + 1e-12 * (np.abs(lo) + np.abs(hi)), 0.0)
    below = np.where(crossing, np.where(hi >= -lo, 1.0, alpha), side)
    return Relaxation(chord - s0, intercept, below - s0, np.zeros_like(intercept))


@certify_rule("Clip")
class ClipRule(PiecewiseLinear):
    """min(max(z, a), b) with constant bounds (inputs from opset 11, attributes before)."""

    def _bounds(self, ctx: NodeContext) -> tuple[float, float]:
        if "bounds" not in ctx.state:
            low = ctx.attr_float("min", -math.inf) if ctx.view.opset < 11 else -math.inf
            high = ctx.attr_float("max", math.inf) if ctx.view.opset < 11 else math.inf
            for index in (1, 2):
                if index < len(ctx.node.input) and ctx.node.input[index]:
                    value = ctx.weight(index)
                    if index == 1:
                        low = float(value.reshape(()))
                    else:
                        high = float(value.reshape(()))
            ctx.state["bounds"] = (low, high)
        return ctx.state["bounds"]

    def kinks(self, ctx: NodeContext) -> tuple[float, ...]:
        """The two bounds."""
        return self._bounds(ctx)

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """The clipped value."""
        low, high = self._bounds(ctx)
        return np.minimum(np.maximum(z, low), high)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Monotone and exact."""
        return self.value(ctx, lo), self.value(ctx, hi)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """1 strictly inside the bounds, else 0."""
        low, high = self._bounds(ctx)
        return ((z > low) & (z < high)).astype(np.float64)

    def slope_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """1 if [lo, hi] is strictly inside, 0 if strictly outside on one side, else [0, 1]."""
        low, high = self._bounds(ctx)
        inside = (lo > low) & (hi < high)
        outside = (hi < low) | (lo > high)
        return np.where(inside, 1.0, 0.0), np.where(outside, 0.0, 1.0)


class SmoothBell(PointwiseRule):
    """Monotone increasing f whose slope is largest at 0 and falls off with |z| (sigmoid, tanh, erf)."""

    value_points = ()
    slope_points = (0.0,)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Monotone: f(lo), f(hi)."""
        return _widen(self.value(ctx, lo), self.value(ctx, hi))


@certify_rule("Sigmoid")
class SigmoidRule(SmoothBell):
    """1 / (1 + e^-z), slope s (1 - s) <= 1/4."""

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """The logistic function."""
        return special.expit(z)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """S (1 - s), computed as s(z) s(-z) (no cancellation)."""
        return special.expit(z) * special.expit(-z)


@certify_rule("Tanh")
class TanhRule(SmoothBell):
    """tanh z, slope 1 - tanh^2 z <= 1."""

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """Tanh."""
        return np.tanh(z)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """1 / cosh^2 z (no cancellation for large |z|)."""
        return 1.0 / np.cosh(np.clip(z, -350.0, 350.0)) ** 2


@certify_rule("Erf")
class ErfRule(SmoothBell):
    """erf z, slope 2/sqrt(pi) e^{-z^2}."""

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """Erf."""
        return special.erf(z)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """The Gaussian bell."""
        return 2.0 / math.sqrt(math.pi) * np.exp(-np.square(z))


_GELU_MIN = -0.7517915241  # f'(z) = 0: Phi(z) + z phi(z) = 0 (refined by the widening below)


@certify_rule("Gelu")
class GeluRule(PointwiseRule):
    """z Phi(z) (approximate="none"); f' = Phi + z phi, f'' = phi (2 - z^2): f' peaks at +-sqrt 2."""

    slope_points = (-math.sqrt(2.0), math.sqrt(2.0))

    def _exact(self, ctx: NodeContext) -> None:
        if ctx.attr_str("approximate", "none") != "none":
            raise ctx.refuse("only the exact (erf) GELU is certified")

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """Z Phi(z)."""
        self._exact(ctx)
        return z * special.ndtr(z)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """Phi(z) + z phi(z)."""
        return special.ndtr(z) + z * np.exp(-0.5 * np.square(z)) / math.sqrt(2.0 * math.pi)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Endpoints and the minimum near -0.7518 (its value lowered by a margin covering the root's error)."""
        low, high = _extremes(lambda z: self.value(ctx, z), lo, hi, ())
        inside = (lo <= _GELU_MIN) & (hi >= _GELU_MIN)
        minimum = float(self.value(ctx, np.array(_GELU_MIN))) - 1e-12
        return _widen(np.where(inside, np.minimum(low, minimum), low), high)


@certify_rule("HardSigmoid")
class HardSigmoidRule(PiecewiseLinear):
    """max(0, min(1, alpha z + beta)): slope alpha between the breaks, 0 outside."""

    def _params(self, ctx: NodeContext) -> tuple[float, float]:
        return ctx.attr_float("alpha", 0.2), ctx.attr_float("beta", 0.5)

    def kinks(self, ctx: NodeContext) -> tuple[float, ...]:
        """Where alpha z + beta reaches 0 and 1."""
        alpha, beta = self._params(ctx)
        return (-beta / alpha, (1.0 - beta) / alpha) if alpha else ()

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """The clipped line."""
        alpha, beta = self._params(ctx)
        return np.clip(alpha * z + beta, 0.0, 1.0)

    def value_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Monotone: the endpoints."""
        a, b = self.value(ctx, lo), self.value(ctx, hi)
        return _widen(np.minimum(a, b), np.maximum(a, b))

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """Alpha where 0 < alpha z + beta < 1."""
        alpha, beta = self._params(ctx)
        line = alpha * z + beta
        return np.where((line > 0) & (line < 1), alpha, 0.0)

    def slope_range(self, ctx: NodeContext, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Alpha inside, 0 saturated on one side, else between 0 and alpha."""
        alpha, beta = self._params(ctx)
        a, b = alpha * lo + beta, alpha * hi + beta
        low_line, high_line = np.minimum(a, b), np.maximum(a, b)
        inside = (low_line > 0) & (high_line < 1)
        outside = (high_line < 0) | (low_line > 1)
        fixed = np.where(inside, alpha, 0.0)
        moving = ~(inside | outside)
        return np.where(moving, min(0.0, alpha), fixed), np.where(moving, max(0.0, alpha), fixed)


@certify_rule("HardSwish")
class HardSwishRule(PointwiseRule):
    """z * HardSigmoid(z) with alpha 1/6, beta 1/2: 0 below -3, z above 3, z (z + 3) / 6 between."""

    value_points = (-1.5,)
    slope_points = (-3.0, 3.0)

    def kinks(self, ctx: NodeContext) -> tuple[float, ...]:
        """-3 and 3."""
        return self.slope_points

    def value(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """HardSwish."""
        return z * np.clip(z / 6.0 + 0.5, 0.0, 1.0)

    def slope(self, ctx: NodeContext, z: np.ndarray) -> np.ndarray:
        """0, (2z + 3) / 6, 1."""
        return np.where(z < -3.0, 0.0, np.where(z > 3.0, 1.0, (2.0 * z + 3.0) / 6.0))

    def slope_limits(self, ctx: NodeContext, point: float) -> tuple[float, ...]:
        """Both sides of the breaks: -3 gives 0 and -1/2, 3 gives 3/2 and 1."""
        return (0.0, -0.5) if point < 0 else (1.5, 1.0)
