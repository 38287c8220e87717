"""Layers with constant weights: Conv, Gemm, MatMul with a constant, inference BatchNormalization.

Each is an affine map of its one varying input; the passes are ``LinearRule``'s. BatchNorm needs
no folding into the convolution before it: an element-wise scaling commutes with the centre-radius
form exactly (|s W| = |s| |W|), so propagating it separately loses nothing.
"""

from __future__ import annotations

import numpy as np

from fimaudit.certify.registry import NodeContext, certify_rule
from fimaudit.certify.rules.linear import LinearRule
from fimaudit.certify.windows import Geometry, conv2d, conv2d_transpose
from fimaudit.graph.padding import resolve_pads


def conv_geometry(ctx: NodeContext, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> Geometry:
    """The window geometry of a Conv or pooling node on a 2-D input (auto_pad resolved)."""
    rank = len(kernel)
    strides = ctx.attr_ints("strides") or [1] * rank
    dilations = ctx.attr_ints("dilations") or [1] * rank
    try:
        begin, end = resolve_pads(
            ctx.attr_str("auto_pad", "NOTSET"), ctx.attr_ints("pads"), spatial, kernel, strides, dilations
        )
    except ValueError as exc:
        raise ctx.refuse(str(exc)) from None
    if rank == 1:  # a 1-D window is a 2-D window of height 1
        return Geometry((1, kernel[0]), (1, strides[0]), (1, dilations[0]), (0, begin[0]), (0, end[0]))
    if rank != 2:
        raise ctx.refuse(f"{rank}-D windows are not handled (1-D and 2-D are)")
    return Geometry((kernel[0], kernel[1]), (strides[0], strides[1]), (dilations[0], dilations[1]),
                    (begin[0], begin[1]), (end[0], end[1]))


def as_2d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of a [1, C, H, W] or [1, C, L] tensor."""
    if len(shape) == 3:
        return shape[1], 1, shape[2]
    return shape[1], shape[2], shape[3]


@certify_rule("Conv")
class ConvRule(LinearRule):
    """Y = W * X + B (cross-correlation; groups, strides, dilations, pads; 1-D and 2-D)."""

    def _setup(self, ctx: NodeContext) -> tuple[np.ndarray, Geometry, int, tuple[int, ...]]:
        if "conv" not in ctx.state:
            if self.index(ctx) != 0:
                raise ctx.refuse("the weight must be constant")
            weight = ctx.weight(1)
            in_shape = tuple(ctx.box(0).at.shape)
            if in_shape[0] != 1 or len(in_shape) not in (3, 4):
                raise ctx.refuse(f"input of shape {in_shape} (expected [1, C, H, W] or [1, C, L])")
            geometry = conv_geometry(ctx, in_shape[2:], tuple(weight.shape[2:]))
            w2 = weight.reshape(weight.shape[0], weight.shape[1], *geometry.kernel)
            ctx.state["conv"] = (w2, geometry, ctx.attr_int("group", 1), in_shape)
        return ctx.state["conv"]

    def _run(self, ctx: NodeContext, stack: np.ndarray, absolute: bool, transpose: bool) -> np.ndarray:
        weight, geometry, groups, in_shape = self._setup(ctx)
        w = np.abs(weight) if absolute else weight
        channels, height, width = as_2d(in_shape)
        n = stack.shape[0]
        if not transpose:
            out = conv2d(stack.reshape(n, channels, height, width), w, geometry, groups)
            return out.reshape(n, 1, *out.shape[1:]) if len(in_shape) == 4 else out.reshape(n, 1, out.shape[1], -1)
        out_h, out_w = geometry.output_size((height, width))
        grad = stack.reshape(n, weight.shape[0], out_h, out_w)
        back = conv2d_transpose(grad, w, geometry, groups, (height, width))
        return back.reshape(n, *in_shape)

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """W * x (or |W| * x)."""
        return self._run(ctx, stack, absolute, transpose=False)

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """The adjoint convolution."""
        return self._run(ctx, stack, absolute, transpose=True)

    def bias(self, ctx: NodeContext) -> np.ndarray | float:
        """B per output channel."""
        bias = ctx.const(2)
        if bias is None:
            return 0.0
        weight, _, _, in_shape = self._setup(ctx)
        shape = (1, -1, 1, 1) if len(in_shape) == 4 else (1, -1, 1)
        return np.asarray(bias, dtype=np.float64).reshape(shape)

    def fan_in(self, ctx: NodeContext) -> int:
        """C/groups * kh * kw."""
        weight = self._setup(ctx)[0]
        return int(np.prod(weight.shape[1:]))

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """The kernel's q-norm per output channel (at the border fewer taps meet the input: smaller)."""
        weight, geometry, _, in_shape = self._setup(ctx)
        norms = np.linalg.norm(weight.reshape(weight.shape[0], -1), ord=q, axis=1)
        shape = (1, -1, 1, 1) if len(in_shape) == 4 else (1, -1, 1)
        return norms.reshape(shape)


@certify_rule("Gemm")
class GemmRule(LinearRule):
    """Y = alpha A B + beta C with A the varying [1, m] input and B constant."""

    def _matrix(self, ctx: NodeContext) -> np.ndarray:
        if "matrix" not in ctx.state:
            if self.index(ctx) != 0 or ctx.attr_int("transA", 0):
                raise ctx.refuse("only a varying A (not transposed) times a constant B is handled")
            b = ctx.weight(1)
            b = b.T if ctx.attr_int("transB", 0) else b
            ctx.state["matrix"] = ctx.attr_float("alpha", 1.0) * b
        return ctx.state["matrix"]

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A @ (alpha B)."""
        m = self._matrix(ctx)
        return stack @ (np.abs(m) if absolute else m)

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """G @ (alpha B)^T."""
        m = self._matrix(ctx)
        return stack @ (np.abs(m) if absolute else m).T

    def bias(self, ctx: NodeContext) -> np.ndarray | float:
        """Beta C."""
        c = ctx.const(2)
        return 0.0 if c is None else ctx.attr_float("beta", 1.0) * np.asarray(c, dtype=np.float64)

    def fan_in(self, ctx: NodeContext) -> int:
        """M."""
        return int(self._matrix(ctx).shape[0])

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """The q-norm of each column of alpha B."""
        return np.linalg.norm(self._matrix(ctx), ord=q, axis=0)[None, :]


@certify_rule("MatMul")
class MatMulRule(LinearRule):
    """X @ B or A @ X with the other factor a constant matrix (2-D)."""

    def _factor(self, ctx: NodeContext) -> tuple[int, np.ndarray]:
        index = self.index(ctx)
        factor = ctx.weight(1 - index)
        if factor.ndim != 2:
            raise ctx.refuse("the constant factor must be a matrix (batched constants are not handled)")
        if index == 1 and ctx.box(1).at.ndim < 2:
            raise ctx.refuse("a constant matrix times a vector is not handled")
        return index, factor

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """X @ B, or A @ X."""
        index, factor = self._factor(ctx)
        f = np.abs(factor) if absolute else factor
        return stack @ f if index == 0 else np.matmul(f, stack)

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """G @ B^T, or A^T @ G."""
        index, factor = self._factor(ctx)
        f = np.abs(factor) if absolute else factor
        return stack @ f.T if index == 0 else np.matmul(f.T, stack)

    def fan_in(self, ctx: NodeContext) -> int:
        """The contracted dimension."""
        index, factor = self._factor(ctx)
        return int(factor.shape[0] if index == 0 else factor.shape[1])

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """Column norms of B (broadcast along rows), or row norms of A (along columns)."""
        index, factor = self._factor(ctx)
        if index == 0:
            return np.linalg.norm(factor, ord=q, axis=0)
        return np.linalg.norm(factor, ord=q, axis=1)[:, None]


@certify_rule("BatchNormalization")
class BatchNormRule(LinearRule):
    """Inference BatchNorm: y = s x + (beta - s mean) per channel, s = gamma / sqrt(var + epsilon)."""

    def _scale(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray]:
        if "scale" not in ctx.state:
            if self.index(ctx) != 0 or ctx.attr_int("training_mode", 0):
                raise ctx.refuse("only inference BatchNormalization with constant statistics is handled")
            gamma_, beta, mean, var = (ctx.weight(i).reshape(-1) for i in range(1, 5))
            scale = gamma_ / np.sqrt(var + ctx.attr_float("epsilon", 1e-5))
            shape = (1, -1) + (1,) * (ctx.box(0).at.ndim - 2)
            # sqrt and the division round: one more ulp-scale widening is folded into fan_in.
            ctx.state["scale"] = (scale.reshape(shape), (beta - scale * mean).reshape(shape))
        return ctx.state["scale"]

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """S x."""
        scale = self._scale(ctx)[0]
        return stack * (np.abs(scale) if absolute else scale)

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """S g (diagonal)."""
        return self.apply(ctx, stack, absolute)

    def bias(self, ctx: NodeContext) -> np.ndarray | float:
        """Beta - s mean."""
        return self._scale(ctx)[1]

    def fan_in(self, ctx: NodeContext) -> int:
        """A few roundings in s and the shift (counted generously)."""
        return 8

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """|s| per channel."""
        return np.abs(self._scale(ctx)[0])
