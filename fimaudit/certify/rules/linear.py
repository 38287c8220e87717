"""The shared passes of every affine op y = A x + b (A constant): boxes forward, rows backward.

Forward, in centre-radius form: A mid + b +- |A| rad, which is the exact interval image of a box.
When the input is still the ball itself (``Box.ball``), the exact image of the ball is also taken:
A x + b +- eps ||A_i||_q per output (q the dual norm), and the two ranges are intersected. For an
l2 ball in d dimensions the second is up to sqrt(d) times narrower.

Backward: (c, r) -> (A^T c, |A|^T r), the radius rounded up by (1 + gamma_n) (n the fan-in). The
centre rows are the Jacobian at x computed in float64; their own rounding is not pushed through
|A|^T (which would amplify 1e-16 by |W| at every layer) but covered once, at the end, by the
relative trust in float64 evaluation at x (composition.py, docs/CERTIFICATES.md).
A subclass says what A, |A|, their transposes, the bias, the fan-in and the row norms are.
"""

from __future__ import annotations

import numpy as np

from fimaudit.certify.intervals import Box, Cotangent, gamma, outward
from fimaudit.certify.registry import CertifyRule, NodeContext


def unbroadcast(stack: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a stack [n, *out] over the axes a tensor of ``shape`` was broadcast along: [n, *shape]."""
    lead = stack.ndim - 1 - len(shape)
    if lead > 0:
        stack = stack.sum(axis=tuple(range(1, 1 + lead)))
    axes = tuple(1 + i for i, size in enumerate(shape) if size == 1 and stack.shape[1 + i] != 1)
    if axes:
        stack = stack.sum(axis=axes, keepdims=True)
    return stack.reshape((stack.shape[0], *shape))


class LinearRule(CertifyRule):
    """An op that is affine in its one varying input (see the module docstring)."""

    def index(self, ctx: NodeContext) -> int:
        """The varying input (the first, unless a subclass says otherwise)."""
        varying = ctx.varying()
        if len(varying) != 1:
            raise ctx.refuse("exactly one input may depend on the audited input")
        return varying[0]

    # -- what a subclass defines (stacks are [n, *tensor shape]) ------------------------------
    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A (or |A|) applied to every tensor of the stack."""
        raise NotImplementedError

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A^T (or |A|^T) applied to every tensor of the stack."""
        raise NotImplementedError

    def bias(self, ctx: NodeContext) -> np.ndarray | float:
        """b, broadcastable to the output."""
        return 0.0

    def fan_in(self, ctx: NodeContext) -> int:
        """The largest number of terms one output sums (for the rounding bound)."""
        raise NotImplementedError

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray | None:
        """||A_i||_q for every output i (an upper bound is fine), or None when not available."""
        return None

    # -- the two passes ----------------------------------------------------------------------
    def forward(self, ctx: NodeContext) -> list[Box]:
        """The interval image (and the ball image when the input is the ball itself)."""
        box = ctx.box(self.index(ctx))
        bias = self.bias(ctx)
        g = gamma(self.fan_in(ctx) + 1)
        mid = box.mid
        points = self.apply(ctx, np.stack([box.at, mid]), absolute=False) + bias
        at, centre = points[0], points[1]
        spread = self.apply(ctx, (box.rad + g * np.abs(mid))[None], absolute=True)[0]
        radius = spread * (1.0 + g) + g * np.abs(bias)
        lo, hi = outward(centre - radius, centre + radius, 0.0)
        result = Box(at, lo, hi)
        ball = box.ball
        if ball is not None:
            norms = self.row_norms(ctx, ball.dual)
            if norms is not None:
                image = self.apply(ctx, ball.centre[None], absolute=False)[0] + bias
                slack = g * (self.apply(ctx, np.abs(ball.centre)[None], absolute=True)[0] + np.abs(bias))
                width = ball.eps * norms * (1.0 + g) + slack
                result = result.intersect(*outward(image - width, image + width, 0.0))
        return [result]

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """(A c, |A| r (1 + gamma)) on the stack of input directions."""
        rows = ins[self.index(ctx)]
        assert rows is not None
        g = gamma(self.fan_in(ctx) + 1)
        centre = self.apply(ctx, rows.centre, absolute=False)
        radius = self.apply(ctx, rows.radius, absolute=True) * (1.0 + g)
        return Cotangent(centre, radius)

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """A applied to the stack (no bias: directions, not values)."""
        stack = ins[self.index(ctx)]
        assert stack is not None
        return self.apply(ctx, stack, absolute=False)

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """(A^T c, |A|^T r (1 + gamma))."""
        g = gamma(self.fan_in(ctx) + 1)
        centre = self.transpose(ctx, out.centre, absolute=False)
        radius = self.transpose(ctx, out.radius, absolute=True) * (1.0 + g)
        return {self.index(ctx): Cotangent(centre, radius)}
