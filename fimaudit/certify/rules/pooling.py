"""Pooling: AveragePool, GlobalAveragePool and ReduceMean (linear), MaxPool (a selection).

MaxPool over the set: the output's range is [max of the window's lows, max of its highs]. Its
derivative selects the window's arg-max, which can change over the set only among the
*candidates*, entries whose high reaches the largest low. With a single candidate the selection
is exact (slope 1 for it, 0 for the rest); otherwise each candidate's slope lies in [0, 1] around
its slope at x, which is the activation form of ``activations.PointwiseRule``.
"""

from __future__ import annotations

import numpy as np

from fimaudit.certify.intervals import Box, Cotangent, gamma
from fimaudit.certify.registry import CertifyRule, NodeContext, certify_rule
from fimaudit.certify.rules.affine import as_2d, conv_geometry
from fimaudit.certify.rules.linear import LinearRule
from fimaudit.certify.rules.structure import constant_axes
from fimaudit.certify.windows import Geometry, window_stack, window_unstack


def _pool_setup(ctx: NodeContext) -> tuple[Geometry, tuple[int, ...]]:
    if "pool" not in ctx.state:
        shape = tuple(ctx.box(0).at.shape)
        if shape[0] != 1 or len(shape) not in (3, 4):
            raise ctx.refuse(f"input of shape {shape} (expected [1, C, H, W] or [1, C, L])")
        if ctx.attr_int("ceil_mode", 0):
            raise ctx.refuse("ceil_mode is not handled")
        kernel = ctx.attr_ints("kernel_shape")
        if not kernel:
            raise ctx.refuse("no kernel_shape")
        geometry = conv_geometry(ctx, shape[2:], tuple(kernel))
        ctx.state["pool"] = (geometry, shape)
    return ctx.state["pool"]


def _as_maps(stack: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    channels, height, width = as_2d(shape)
    return stack.reshape(stack.shape[0], channels, height, width)


def _out_shape(shape: tuple[int, ...], geometry: Geometry, channels: int) -> tuple[int, ...]:
    channels_, height, width = as_2d(shape)
    out_h, out_w = geometry.output_size((height, width))
    return (1, channels, out_h, out_w) if len(shape) == 4 else (1, channels, out_w)


@certify_rule("AveragePool")
class AveragePoolRule(LinearRule):
    """The mean of each window (count_include_pad decides the divisor at the border)."""

    def _divisor(self, ctx: NodeContext) -> np.ndarray:
        geometry, shape = _pool_setup(ctx)
        if "divisor" not in ctx.state:
            channels, height, width = as_2d(shape)
            if ctx.attr_int("count_include_pad", 0):
                count = np.full(geometry.output_size((height, width)), float(np.prod(geometry.kernel)))
            else:
                count = window_stack(np.ones((1, 1, height, width)), geometry, 0.0).sum(axis=2)[0, 0]
            ctx.state["divisor"] = count
            ctx.state["real"] = window_stack(np.ones((1, 1, height, width)), geometry, 0.0).sum(axis=2)[0, 0]
        return ctx.state["divisor"]

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """Window sums over the divisor (the weights are positive: |A| = A)."""
        geometry, shape = _pool_setup(ctx)
        sums = window_stack(_as_maps(stack, shape), geometry, 0.0).sum(axis=2) / self._divisor(ctx)
        return sums.reshape(stack.shape[0], *_out_shape(shape, geometry, sums.shape[1]))

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """Each output's row spread evenly over its window."""
        geometry, shape = _pool_setup(ctx)
        channels, height, width = as_2d(shape)
        divisor = self._divisor(ctx)
        rows = stack.reshape(stack.shape[0], channels, *divisor.shape) / divisor
        taps = int(np.prod(geometry.kernel))
        pieces = np.broadcast_to(rows[:, :, None], (rows.shape[0], channels, taps, *divisor.shape))
        return window_unstack(pieces, geometry, (height, width)).reshape(stack.shape[0], *shape)

    def fan_in(self, ctx: NodeContext) -> int:
        """The window size, plus the division."""
        return int(np.prod(_pool_setup(ctx)[0].kernel)) + 1

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """(real entries)^(1/q) / divisor per output."""
        divisor = self._divisor(ctx)
        geometry, shape = _pool_setup(ctx)
        norms = ctx.state["real"] ** (1.0 / q) / divisor
        return norms.reshape(1, 1, *norms.shape) if len(shape) == 4 else norms.reshape(1, 1, -1)


class MeanRule(LinearRule):
    """The mean over some axes of the one varying input (``axes`` and ``keepdims`` from subclasses)."""

    def axes(self, ctx: NodeContext) -> tuple[tuple[int, ...], bool]:
        """(axes, keepdims)."""
        raise NotImplementedError

    def _count(self, ctx: NodeContext) -> int:
        shape = ctx.box(0).at.shape
        return int(np.prod([shape[a] for a in self.axes(ctx)[0]]))

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """The mean (positive weights)."""
        axes, keep = self.axes(ctx)
        return stack.mean(axis=tuple(a + 1 for a in axes), keepdims=keep)

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """Each row spread evenly over the averaged entries."""
        axes, keep = self.axes(ctx)
        shape = ctx.box(0).at.shape
        if not keep:
            stack = np.expand_dims(stack, tuple(a + 1 for a in axes))
        return np.broadcast_to(stack / self._count(ctx), (stack.shape[0], *shape)).copy()

    def fan_in(self, ctx: NodeContext) -> int:
        """Entries averaged, plus the division."""
        return self._count(ctx) + 1

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """count^(1/q) / count."""
        count = self._count(ctx)
        return np.asarray(count ** (1.0 / q) / count)


@certify_rule("GlobalAveragePool")
class GlobalAveragePoolRule(MeanRule):
    """The mean over every spatial axis, kept as size-1 axes."""

    def axes(self, ctx: NodeContext) -> tuple[tuple[int, ...], bool]:
        """Axes 2 and after."""
        return tuple(range(2, ctx.box(0).at.ndim)), True


@certify_rule("ReduceMean")
class ReduceMeanRule(MeanRule):
    """ReduceMean with constant axes (attribute, or input from opset 18)."""

    def axes(self, ctx: NodeContext) -> tuple[tuple[int, ...], bool]:
        """The axes (all when none are given) and keepdims."""
        rank = ctx.box(0).at.ndim
        axes = constant_axes(ctx)
        if not axes:
            if ctx.attr_int("noop_with_empty_axes", 0):
                raise ctx.refuse("noop_with_empty_axes is not handled")
            axes = list(range(rank))
        return tuple(sorted(a % rank for a in axes)), bool(ctx.attr_int("keepdims", 1))


def _moving_candidates(ctx: NodeContext) -> np.ndarray:
    """[C, taps, OH, OW]: the candidates of windows whose arg-max can change (some candidate moves)."""
    ambiguous, constant = ctx.state["max"][1], ctx.state["constant"]
    return np.asarray(ambiguous & ~constant)


@certify_rule("MaxPool")
class MaxPoolRule(CertifyRule):
    """The maximum of each window (module docstring); a second (indices) output is refused."""

    def forward(self, ctx: NodeContext) -> list[Box]:
        """Window maxima of at, lo and hi; the candidates' slopes kept for the backward pass."""
        if len([o for o in ctx.node.output if o]) > 1:
            raise ctx.refuse("the indices output is not handled")
        geometry, shape = _pool_setup(ctx)
        box = ctx.box(0)
        at, lo, hi = (window_stack(_as_maps(a[None], shape), geometry, -np.inf)[0]
                      for a in (box.at, box.lo, box.hi))
        best_low = lo.max(axis=1, keepdims=True)  # [C, taps, OH, OW] -> max over taps
        candidate = hi >= best_low
        winner = np.zeros_like(at, dtype=bool)
        np.put_along_axis(winner, at.argmax(axis=1)[:, None], True, axis=1)
        ctx.state["max"] = (winner.astype(np.float64), (candidate & (candidate.sum(axis=1, keepdims=True) > 1)))
        ctx.state["constant"] = ~(candidate & (hi > lo)).any(axis=1, keepdims=True)
        out_shape = _out_shape(shape, geometry, at.shape[0])
        return [Box(*(a.max(axis=1).reshape(out_shape) for a in (at, lo, hi)))]

    def unstable(self, ctx: NodeContext) -> int:
        """Windows whose arg-max can change over the set (windows of constant candidates excepted)."""
        return int(np.count_nonzero(self.changing(ctx)[0]))

    def spreads(self, ctx: NodeContext) -> list[tuple[int, np.ndarray]] | None:
        """Not diagonal: telescoping.py asks ``changing`` instead."""
        return None

    def changing(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray, int]:
        """(outputs whose selection can change, inputs that can be selected there, max windows per input).

        A window whose candidates are all constant over the set has a constant maximum: its
        derivative is zero whichever candidate is picked, so it is not counted.
        """
        geometry, shape = _pool_setup(ctx)
        moving = _moving_candidates(ctx)
        outputs = np.asarray(moving.any(axis=1))  # [C, OH, OW]
        channels, height, width = as_2d(shape)
        inputs = window_unstack(moving[None].astype(np.float64), geometry, (height, width))[0] > 0
        windows = window_unstack(np.ones((1, 1, *moving.shape[1:])), geometry, (height, width))
        return outputs, inputs, int(windows.max())

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """The winner's directions; an ambiguous window's radius covers every candidate's."""
        rows = ins[0]
        assert rows is not None
        geometry, shape = _pool_setup(ctx)
        winner, ambiguous = ctx.state["max"]
        if ctx.state.get("centre_only"):
            ambiguous = np.zeros_like(ambiguous)
        n = rows.centre.shape[0]
        c = window_stack(_as_maps(rows.centre, shape), geometry, 0.0)
        r = window_stack(_as_maps(rows.radius, shape), geometry, 0.0)
        centre = (winner[None] * c).sum(axis=2)
        own = (winner[None] * r).sum(axis=2)
        others = np.where(ambiguous[None], np.abs(c - centre[:, :, None]) + r, 0.0).max(axis=2)
        radius = np.maximum(own, others) * (1.0 + gamma(4))
        out_shape = _out_shape(shape, geometry, centre.shape[1])
        return Cotangent(centre.reshape(n, *out_shape), radius.reshape(n, *out_shape))

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """The winner's directions at x."""
        stack = ins[0]
        assert stack is not None
        geometry, shape = _pool_setup(ctx)
        winner = ctx.state["max"][0]
        n = stack.shape[0]
        centre = (winner[None] * window_stack(_as_maps(stack, shape), geometry, 0.0)).sum(axis=2)
        return centre.reshape(n, *_out_shape(shape, geometry, centre.shape[1]))

    def changing_weights(self, ctx: NodeContext, bounds: np.ndarray) -> np.ndarray:
        """Per output: 0, or 2 max of ``bounds`` over the window's candidates when its selection can change.

        The selection's change at output o is e_new - e_old, both candidates of o's window, so its
        product with any per-entry quantity bounded by ``bounds`` is at most twice their largest.
        """
        geometry, shape = _pool_setup(ctx)
        values = window_stack(_as_maps(bounds[None], shape), geometry, 0.0)[0]
        largest = np.where(_moving_candidates(ctx), values, 0.0).max(axis=1)
        out_shape = _out_shape(shape, geometry, largest.shape[0])
        return (2.0 * largest).reshape(out_shape)

    def remainders(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray] | None:
        """Max of the window minus its winner at x: between 0 and max(hi) - lo(winner), 0 where it cannot change."""
        geometry, shape = _pool_setup(ctx)
        box = ctx.box(0)
        winner = ctx.state["max"][0]
        lows = window_stack(_as_maps(box.lo[None], shape), geometry, 0.0)[0]
        highs = window_stack(_as_maps(box.hi[None], shape), geometry, -np.inf)[0]
        gap = highs.max(axis=1) - (winner * lows).sum(axis=1)
        gap = np.where(_moving_candidates(ctx).any(axis=1), np.maximum(gap, 0.0), 0.0)
        high = np.nextafter(gap, np.inf).reshape(_out_shape(shape, geometry, gap.shape[0]))
        return np.zeros_like(high), high

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """Rows to the arg-max at x; spread (|c| + r) to every candidate of an ambiguous window."""
        geometry, shape = _pool_setup(ctx)
        channels, height, width = as_2d(shape)
        winner, ambiguous = ctx.state["max"]
        if ctx.state.get("centre_only"):
            ambiguous = np.zeros_like(ambiguous)
        n = out.centre.shape[0]
        out_h, out_w = winner.shape[2:]
        c = out.centre.reshape(n, channels, 1, out_h, out_w)
        r = out.radius.reshape(n, channels, 1, out_h, out_w)
        centre_pieces = winner[None] * c
        radius_pieces = winner[None] * r + ambiguous[None] * (np.abs(c) + r)
        centre = window_unstack(centre_pieces, geometry, (height, width))
        taps = int(np.prod(geometry.kernel))
        radius = window_unstack(radius_pieces, geometry, (height, width)) * (1.0 + gamma(taps))
        return {0: Cotangent(centre.reshape(n, *shape), radius.reshape(n, *shape))}
