"""Ops that only move entries: Identity, Dropout, Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat.

Moving entries is exact in both passes: boxes are moved like the tensor, cotangent rows are moved
back. A reshape or transpose keeps every l_p norm, so the input ball travels through them and
the first affine layer after them still sees it.
"""

from __future__ import annotations

import numpy as np

from fimaudit.certify.intervals import Box, Cotangent
from fimaudit.certify.registry import CertifyRule, NodeContext, certify_rule


class ShapeRule(CertifyRule):
    """A reshape of the one varying input to ``out_shape``."""

    def out_shape(self, ctx: NodeContext, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input of ``shape``."""
        raise NotImplementedError

    def forward(self, ctx: NodeContext) -> list[Box]:
        """Every part of the box reshaped."""
        box = ctx.box(0)
        shape = self.out_shape(ctx, tuple(box.at.shape))
        if int(np.prod(shape)) != box.at.size:
            raise ctx.refuse(f"cannot reshape {box.at.shape} to {shape}")
        ball = box.ball.reshaped(shape) if box.ball is not None else None
        return [Box(box.at.reshape(shape), box.lo.reshape(shape), box.hi.reshape(shape), ball)]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """Directions reshaped like the tensor."""
        rows = ins[0]
        assert rows is not None
        shape = self.out_shape(ctx, tuple(ctx.box(0).at.shape))
        return rows.map(lambda a: a.reshape((a.shape[0], *shape)))

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """The stack reshaped like the tensor."""
        stack = ins[0]
        assert stack is not None
        return stack.reshape((stack.shape[0], *self.out_shape(ctx, tuple(ctx.box(0).at.shape))))

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """Rows reshaped back to the input's shape."""
        shape = tuple(ctx.box(0).at.shape)
        return {0: out.map(lambda a: a.reshape((a.shape[0], *shape)))}


@certify_rule("Identity", "Dropout")
class IdentityRule(ShapeRule):
    """The input itself (Dropout at inference)."""

    def out_shape(self, ctx: NodeContext, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Unchanged."""
        return shape


@certify_rule("Reshape")
class ReshapeRule(ShapeRule):
    """Reshape to a constant shape (0 copies a dimension unless allowzero, -1 is inferred)."""

    def out_shape(self, ctx: NodeContext, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The constant target, resolved."""
        target = ctx.const(1)
        if target is None:
            raise ctx.refuse("the target shape must be constant")
        dims = [int(d) for d in np.asarray(target).reshape(-1)]
        if not ctx.attr_int("allowzero", 0):
            dims = [shape[i] if d == 0 else d for i, d in enumerate(dims)]
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = int(np.prod(shape)) // max(known, 1)
        return tuple(dims)


@certify_rule("Flatten")
class FlattenRule(ShapeRule):
    """[d_0 ... d_{a-1}] x [d_a ...] as a matrix."""

    def out_shape(self, ctx: NodeContext, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Two dimensions split at ``axis``."""
        axis = ctx.attr_int("axis", 1) % (len(shape) + 1) if shape else 0
        return int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))


def constant_axes(ctx: NodeContext) -> list[int] | None:
    """Axes from the attribute (old opsets) or the constant second input (opset 13+)."""
    axes = ctx.attr_ints("axes")
    if axes is None and len(ctx.node.input) > 1 and ctx.node.input[1]:
        value = ctx.const(1)
        if value is None:
            raise ctx.refuse("the axes must be constant")
        axes = [int(a) for a in np.asarray(value).reshape(-1)]
    return axes


@certify_rule("Squeeze")
class SqueezeRule(ShapeRule):
    """Drop axes of size 1."""

    def out_shape(self, ctx: NodeContext, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` without the squeezed axes."""
        axes = constant_axes(ctx)
        drop = {a % len(shape) for a in axes} if axes else {i for i, s in enumerate(shape) if s == 1}
        return tuple(s for i, s in enumerate(shape) if i not in drop)


@certify_rule("Unsqueeze")
class UnsqueezeRule(ShapeRule):
    """Insert axes of size 1."""

    def out_shape(self, ctx: NodeContext, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` with the new axes."""
        axes = constant_axes(ctx)
        if not axes:
            raise ctx.refuse("no axes")
        rank = len(shape) + len(axes)
        new = sorted(a % rank for a in axes)
        dims = list(shape)
        for a in new:
            dims.insert(a, 1)
        return tuple(dims)


@certify_rule("Transpose")
class TransposeRule(CertifyRule):
    """A permutation of the axes."""

    def _perm(self, ctx: NodeContext) -> tuple[int, ...]:
        rank = ctx.box(0).at.ndim
        perm = ctx.attr_ints("perm")
        return tuple(perm) if perm is not None else tuple(reversed(range(rank)))

    def forward(self, ctx: NodeContext) -> list[Box]:
        """Every part permuted."""
        box, perm = ctx.box(0), self._perm(ctx)
        ball = box.ball.transposed(perm) if box.ball is not None else None
        return [Box(np.transpose(box.at, perm), np.transpose(box.lo, perm), np.transpose(box.hi, perm), ball)]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """Directions permuted like the tensor."""
        rows = ins[0]
        assert rows is not None
        perm = (0, *(p + 1 for p in self._perm(ctx)))
        return rows.map(lambda a: np.transpose(a, perm))

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """The stack permuted like the tensor."""
        stack = ins[0]
        assert stack is not None
        return np.transpose(stack, (0, *(p + 1 for p in self._perm(ctx))))

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """Rows permuted back (the row axis stays first)."""
        inverse = tuple(int(i) + 1 for i in np.argsort(self._perm(ctx)))
        return {0: out.map(lambda a: np.transpose(a, (0, *inverse)))}


@certify_rule("Concat")
class ConcatRule(CertifyRule):
    """Inputs side by side along ``axis`` (constant inputs are points)."""

    def _parts(self, ctx: NodeContext) -> list[Box]:
        parts = []
        for index in range(len(ctx.node.input)):
            box = ctx.boxes[index]
            parts.append(box if box is not None else Box.point(np.asarray(ctx.const(index), dtype=np.float64)))
        return parts

    def forward(self, ctx: NodeContext) -> list[Box]:
        """The boxes concatenated."""
        parts = self._parts(ctx)
        axis = ctx.attr_int("axis", 0)
        at, lo, hi = (np.concatenate([getattr(p, name) for p in parts], axis=axis) for name in ("at", "lo", "hi"))
        return [Box(at, lo, hi)]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """Directions concatenated (a constant input has none: zeros)."""
        parts = self._parts(ctx)
        n = next(rows.centre.shape[0] for rows in ins if rows is not None)
        axis = ctx.attr_int("axis", 0) % parts[0].at.ndim + 1
        centres, radii = [], []
        for part, rows in zip(parts, ins, strict=True):
            zero = np.zeros((n, *part.at.shape))
            centres.append(zero if rows is None else rows.centre)
            radii.append(zero if rows is None else rows.radius)
        return Cotangent(np.concatenate(centres, axis=axis), np.concatenate(radii, axis=axis))

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """The stacks concatenated (a constant input: zeros)."""
        parts = self._parts(ctx)
        n = next(stack.shape[0] for stack in ins if stack is not None)
        axis = ctx.attr_int("axis", 0) % parts[0].at.ndim + 1
        return np.concatenate([np.zeros((n, *part.at.shape)) if stack is None else stack
                               for part, stack in zip(parts, ins, strict=True)], axis=axis)

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """Each varying input gets its slice of the rows."""
        parts = self._parts(ctx)
        axis = ctx.attr_int("axis", 0) % parts[0].at.ndim + 1
        result, start = {}, 0
        for index, part in enumerate(parts):
            stop = start + part.at.shape[axis - 1]
            if ctx.boxes[index] is not None:
                pick = [slice(None)] * out.centre.ndim
                pick[axis] = slice(start, stop)
                result[index] = out.map(lambda a, p=tuple(pick): a[p])
            start = stop
        return result
