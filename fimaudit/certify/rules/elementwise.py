"""Add, Sub, Mul, Div: by a constant (affine, ``LinearRule``) or of two input-dependent tensors.

Two varying tensors: a sum is exact in both passes. A product a * b is certified by interval
multiplication forward and by the product rule backward, d(ab) = b da + a db, where the factor b
over the set lies in [b_lo, b_hi] around its value b0 at x: the row through a becomes
(b0 c, |b0| r + m_b (|c| + r)) with m_b = max(b_hi - b0, b0 - b_lo) — the same form as an
activation's slope range. This covers exporters' decomposed GELU (x * 0.5 * (1 + erf(x/sqrt 2)))
and HardSwish (x * HardSigmoid(x)). Division by an input-dependent tensor is not certified.
"""

from __future__ import annotations

import numpy as np

from fimaudit.certify.intervals import Box, Cotangent, gamma, outward
from fimaudit.certify.registry import CertifyRule, NodeContext, certify_rule
from fimaudit.certify.rules.linear import LinearRule, unbroadcast

_U = gamma(2)


def lift(stack: np.ndarray, rank: int) -> np.ndarray:
    """A stack [n, *shape] with leading size-1 axes so that ``shape`` has ``rank`` axes (broadcasting)."""
    missing = rank - (stack.ndim - 1)
    return stack.reshape((stack.shape[0],) + (1,) * missing + stack.shape[1:]) if missing > 0 else stack


class ScaleShift(LinearRule):
    """y = a x + b element-wise with constants a, b (broadcast); subclasses say what a and b are."""

    def coefficients(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) as float64 arrays."""
        raise NotImplementedError

    def _rank(self, ctx: NodeContext) -> int:
        a, b = self.coefficients(ctx)
        return max(ctx.box(self.index(ctx)).at.ndim, a.ndim, b.ndim)

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A x (broadcast)."""
        a = self.coefficients(ctx)[0]
        out = lift(stack, self._rank(ctx)) * (np.abs(a) if absolute else a)
        return np.broadcast_to(out, (stack.shape[0], *self._out_shape(ctx))).copy()

    def _out_shape(self, ctx: NodeContext) -> tuple[int, ...]:
        a, b = self.coefficients(ctx)
        return tuple(np.broadcast_shapes(ctx.box(self.index(ctx)).at.shape, a.shape, b.shape))

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A g, summed back over the axes x was broadcast along."""
        a = self.coefficients(ctx)[0]
        return unbroadcast(stack * (np.abs(a) if absolute else a), tuple(ctx.box(self.index(ctx)).at.shape))

    def bias(self, ctx: NodeContext) -> np.ndarray | float:
        """B."""
        return self.coefficients(ctx)[1]

    def fan_in(self, ctx: NodeContext) -> int:
        """Entries summed when x was broadcast, plus the product and the shift."""
        size = max(ctx.box(self.index(ctx)).at.size, 1)
        return int(np.prod(self._out_shape(ctx))) // size + 2

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """|a| (each output reads one input entry)."""
        a = self.coefficients(ctx)[0]
        return np.broadcast_to(np.abs(a), self._out_shape(ctx))


def _sum_boxes(first: Box, second: Box, sign: float) -> Box:
    at = first.at + sign * second.at
    lo = first.lo + (second.lo if sign > 0 else -second.hi)
    hi = first.hi + (second.hi if sign > 0 else -second.lo)
    slack = _U * np.maximum(np.abs(lo), np.abs(hi))
    return Box(at, *outward(lo, hi, slack))


class SumRule(ScaleShift):
    """Add and Sub: a shift by a constant, or the sum of two varying tensors."""

    sign = 1.0

    def coefficients(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray]:
        """X + c: a = 1, b = c; Sub: x - c (a = 1, b = -c) or c - x (a = -1, b = c)."""
        index = self.index(ctx)
        constant = np.asarray(ctx.weight(1 - index), dtype=np.float64)
        if self.sign > 0:
            return np.ones(()), constant
        return (np.ones(()), -constant) if index == 0 else (-np.ones(()), constant)

    def forward(self, ctx: NodeContext) -> list[Box]:
        """Affine with a constant; interval sum of two varying inputs."""
        if len(ctx.varying()) == 1:
            return super().forward(ctx)
        return [_sum_boxes(ctx.box(0), ctx.box(1), self.sign)]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """Affine with a constant; the sum (difference) of the two inputs' directions."""
        if len(ctx.varying()) == 1:
            return super().tangent(ctx, ins)
        first, second = ins[0], ins[1]
        assert first is not None and second is not None
        rank = max(first.centre.ndim, second.centre.ndim) - 1
        centre = lift(first.centre, rank) + self.sign * lift(second.centre, rank)
        radius = (lift(first.radius, rank) + lift(second.radius, rank)) * (1 + _U)
        return Cotangent(centre, radius)

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """Affine with a constant; the sum (difference) of the two stacks."""
        if len(ctx.varying()) == 1:
            return super().linear(ctx, ins)
        first, second = ins[0], ins[1]
        assert first is not None and second is not None
        rank = max(first.ndim, second.ndim) - 1
        return lift(first, rank) + self.sign * lift(second, rank)

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """Rows passed to both inputs (negated for Sub's second), summed over broadcast axes."""
        if len(ctx.varying()) == 1:
            return super().backward(ctx, out)
        result = {}
        for index, sign in ((0, 1.0), (1, self.sign)):
            shape = tuple(ctx.box(index).at.shape)
            size = out.centre[0].size // max(ctx.box(index).at.size, 1)
            centre = sign * unbroadcast(out.centre, shape)
            radius = unbroadcast(out.radius, shape) * (1 + gamma(size))
            result[index] = Cotangent(centre, radius)
        return result


@certify_rule("Add")
class AddRule(SumRule):
    """a + b."""

    sign = 1.0


@certify_rule("Sub")
class SubRule(SumRule):
    """a - b."""

    sign = -1.0


def _product(first: Box, second: Box) -> Box:
    corners = np.stack(np.broadcast_arrays(first.lo * second.lo, first.lo * second.hi,
                                           first.hi * second.lo, first.hi * second.hi))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    slack = _U * np.maximum(np.abs(lo), np.abs(hi))
    return Box(first.at * second.at, *outward(lo, hi, slack))


def factor_rows(out: Cotangent, factor: Box, shape: tuple[int, ...], centre_only: bool = False) -> Cotangent:
    """The rows through one factor of a product whose other factor is ``factor`` (module docstring)."""
    b0 = factor.at
    spread = 0.0 if centre_only else np.maximum(np.maximum(factor.hi - b0, b0 - factor.lo), 0.0)
    centre = out.centre * b0
    radius = np.abs(b0) * out.radius + spread * (np.abs(out.centre) + out.radius)
    size = out.centre[0].size // max(int(np.prod(shape)), 1)
    return Cotangent(unbroadcast(centre, shape),
                     unbroadcast(radius * (1 + gamma(3)), shape) * (1 + gamma(size)))


@certify_rule("Mul")
class MulRule(ScaleShift):
    """x * c (affine), or the product of two varying tensors (module docstring)."""

    def coefficients(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray]:
        """A = c, b = 0."""
        return np.asarray(ctx.weight(1 - self.index(ctx)), dtype=np.float64), np.zeros(())

    def forward(self, ctx: NodeContext) -> list[Box]:
        """Affine, or interval multiplication."""
        if len(ctx.varying()) == 1:
            return super().forward(ctx)
        return [_product(ctx.box(0), ctx.box(1))]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """Affine, or b0 da + a0 db with both factors' ranges (module docstring)."""
        if len(ctx.varying()) == 1:
            return super().tangent(ctx, ins)
        total: Cotangent | None = None
        for index in (0, 1):
            rows, other = ins[index], ctx.box(1 - index)
            assert rows is not None
            rank = max(rows.centre.ndim - 1, other.at.ndim)
            c, r = lift(rows.centre, rank), lift(rows.radius, rank)
            spread = np.maximum(np.maximum(other.hi - other.at, other.at - other.lo), 0.0)
            if ctx.state.get("centre_only"):
                spread = np.zeros_like(spread)
            centre = c * other.at
            radius = (np.abs(other.at) * r + spread * (np.abs(c) + r)) * (1 + gamma(3))
            part = Cotangent(centre, radius)
            total = part if total is None else total.add(part)
        assert total is not None
        return total

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """Affine, or the product rule at x (``tangent`` with zero radii)."""
        if len(ctx.varying()) == 1:
            return super().linear(ctx, ins)
        return CertifyRule.linear(self, ctx, ins)

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """Affine, or the product rule with the other factor's range."""
        if len(ctx.varying()) == 1:
            return super().backward(ctx, out)
        centre_only = bool(ctx.state.get("centre_only"))
        return {index: factor_rows(out, ctx.box(1 - index), tuple(ctx.box(index).at.shape), centre_only)
                for index in (0, 1)}

    def spreads(self, ctx: NodeContext) -> list[tuple[int, np.ndarray]] | None:
        """Each factor's slope is the other factor: its spread (same shapes only, else None)."""
        if len(ctx.varying()) == 1:
            return []
        first, second = ctx.box(0), ctx.box(1)
        if first.at.shape != second.at.shape:
            return None
        return [(index, np.maximum(np.maximum(other.hi - other.at, other.at - other.lo), 0.0))
                for index, other in ((0, second), (1, first))]


@certify_rule("Div")
class DivRule(ScaleShift):
    """x / c with a constant c (a division by an input-dependent tensor is refused)."""

    def index(self, ctx: NodeContext) -> int:
        """The numerator must be the varying input."""
        if ctx.varying() != [0]:
            raise ctx.refuse("only division by a constant is certified")
        return 0

    def coefficients(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray]:
        """A = 1 / c (its rounding is covered by fan_in's margin), b = 0."""
        return 1.0 / np.asarray(ctx.weight(1), dtype=np.float64), np.zeros(())


