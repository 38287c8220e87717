"""Gradient rules of pooling: GlobalAveragePool, GlobalMaxPool, AveragePool, MaxPool.

Window geometry (kernel, strides, dilations, pads resolved from ``auto_pad``) must be static in
the spatial dims; batch and channels may be symbolic. The forward-mode rules re-use the forward
op (AveragePool of the tangent) or an exact "extract the windows" convolution; the reverse-mode
rules scatter window contributions back with ``ConvTranspose`` (col2im), cropping the padding.

- AveragePool is linear: y = r * (sum over the window's taps inside the input), with a per-output
  factor r = 1 / divisor. The divisor depends on ``count_include_pad`` and, under ``ceil_mode``,
  on a runtime convention for windows that run past the padding, so r is not derived here: it is
  computed in the gradient graph as AveragePool(ones) / (number of taps inside the input), on
  the same runtime as the forward. The VJP then scatters g * r with an all-ones ConvTranspose.
- MaxPool: each output's derivative picks the input at its window's maximum. The taps of every
  window are extracted exactly (Pad with -inf, one strided Slice per tap) and ArgMax names the
  winning tap (the first at a tie, in row-major tap order; PyTorch's ``max_pool2d`` also takes one
  maximum, ReduceMax/GlobalMaxPool here split ties evenly); a static table turns it into a flat
  input index. The JVP gathers the tangent there (GatherElements); the VJP scatter-adds the
  cotangent there (ScatterElements 'add' from opset 16; before, a one-hot ConvTranspose of the
  winning taps). Overlapping windows (stride < kernel) accumulate correctly in both. The
  Indices output of MaxPool is not used: onnx.reference computes it wrongly for unit strides.
  Windows that tile the input (stride = kernel, no padding or dilation, no remainder) take a
  cheaper exact path: a 0/1 mask of the winners in the input's layout, from the forward input
  alone (square 2-D float windows by SpaceToDepth, ArgMax and DepthToSpace; others by strided
  taps and a Transpose); the VJP multiplies the cotangent, repeated over its window, by it, and
  the JVP sums the masked tangent over each window (one non-zero term: exact).
- Under ``ceil_mode`` onnx shape inference can report one output more than ONNX Runtime and
  onnx.reference compute (both drop a last window that starts in the padding, as PyTorch does).
  ONNX Runtime then folds ``Shape`` of the output to the inferred (wrong) value, so no gradient
  graph can be consistent: such nodes are refused with UnsupportedOpError when the graph is built.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from fimaudit.autodiff.context import PADS_AS_INPUT, RuleContext
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import REQUIRED, attribute, attributes_of, ints_attribute

SCATTER_REDUCTION = 16  # ScatterElements gained reduction='add'
RESIZE_WITHOUT_ROI = 13  # Resize's roi input became optional
DEPTH_TO_SPACE_MODE = 11  # DepthToSpace gained its mode attribute (DCR before, implicitly)


# ---- window geometry --------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """Static geometry of a pooling node over its spatial dims."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]
    in_dims: list[int]
    ceil_mode: bool

    @property
    def extents(self) -> list[int]:
        """Span of a dilated window per axis."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations, strict=True)]

    @property
    def max_out(self) -> list[int]:
        """Output size per axis before any runtime drops a last window starting in the padding."""
        sizes = []
        for n, b, e, extent, s in zip(self.in_dims, self.begins, self.ends, self.extents, self.strides, strict=True):
            span = n + b + e - extent
            sizes.append((math.ceil(span / s) if self.ceil_mode else span // s) + 1)
        return sizes

    @property
    def padded_ends(self) -> list[int]:
        """End padding that makes every window (up to ``max_out``) lie inside the padded input."""
        return [
            max(e, (o - 1) * s + extent - n - b)
            for n, b, e, o, s, extent in zip(
                self.in_dims, self.begins, self.ends, self.max_out, self.strides, self.extents, strict=True
            )
        ]

    @property
    def taps(self) -> int:
        """Number of taps (kernel positions) per window."""
        return int(np.prod(self.kernel))


def window(ctx: RuleContext, node: onnx.NodeProto) -> Window:
    """Resolve kernel, strides, dilations and pads (explicit or ``auto_pad``) of a pooling node."""
    x = node.input[0]
    shape = ctx.static_shape(x)
    kernel = ints_attribute(node, "kernel_shape", REQUIRED)
    count = len(kernel)
    if shape is None or len(shape) != count + 2 or not all(isinstance(d, int) for d in shape[2:]):
        raise UnsupportedOpError(
            f"{node.op_type} node {node.name!r}: the spatial dims of {x!r} must be static", [node.op_type]
        )
    in_dims = [int(d) for d in shape[2:]]  # type: ignore[arg-type]
    strides = ints_attribute(node, "strides", [1] * count, length=count)
    dilations = ints_attribute(node, "dilations", [1] * count, length=count)
    auto_pad = str(attribute(node, "auto_pad", "NOTSET"))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for n, k, s, d in zip(in_dims, kernel, strides, dilations, strict=True):
            total = max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
    elif auto_pad == "VALID":
        begins, ends = [0] * count, [0] * count
    else:
        pads = ints_attribute(node, "pads", [0] * (2 * count), length=2 * count)
        begins, ends = pads[:count], pads[count:]
    win = Window(kernel, strides, dilations, begins, ends, in_dims, bool(attribute(node, "ceil_mode", 0)))
    if win.ceil_mode and any(
        (o - 1) * s >= n + b for o, s, n, b in zip(win.max_out, strides, in_dims, begins, strict=True)
    ):
        raise UnsupportedOpError(
            f"{node.op_type} node {node.name!r}: with ceil_mode its last window starts in the padding; ONNX "
            "Runtime drops that window but onnx shape inference counts it, so the model's shapes disagree "
            "with what runs (use finite differences, or re-export without ceil_mode)",
            [node.op_type],
        )
    return win


# ---- helpers ----------------------------------------------------------------------------------
def _spatial(count: int, first: int = 2) -> list[int]:
    return list(range(first, first + count))


def _pad(ctx: RuleContext, tensor: str, begins: list[int], ends: list[int], value: float | None = None) -> str:
    """Constant-pad the spatial dims of an [B, C, *spatial] tensor (opset-aware form)."""
    pads = [0, 0, *begins, 0, 0, *ends]
    if not any(pads):
        return tensor
    if ctx.opset < PADS_AS_INPUT:
        return ctx.emit("Pad", [tensor], pads=pads, value=value)
    inputs = [tensor, ctx.ints(pads)]
    if value is not None:  # a 0-d constant (Reshape to [] whatever rank ctx.scalar stores)
        inputs.append(ctx.emit("Reshape", [ctx.scalar(value, like=tensor), ctx.ints([])]))
    return ctx.emit("Pad", inputs)


def _col2im(ctx: RuleContext, columns: str, weight: str, win: Window) -> str:
    """Scatter window columns [B, K, *out] back to the input grid [B, 1, *in] (summing overlaps).

    ConvTranspose places column k of output o at padded position o * s + tap_k * d; the result is
    padded at the end by the stride (it can fall short of the input by less than one stride) and
    cropped to the input's range [begin, begin + n) of the padded grid.
    """
    full = ctx.emit("ConvTranspose", [columns, weight], strides=win.strides, dilations=win.dilations)
    count = len(win.kernel)
    padded = _pad(ctx, full, [0] * count, list(win.strides))
    stops = [b + n for b, n in zip(win.begins, win.in_dims, strict=True)]
    return ctx.slice(padded, win.begins, stops, _spatial(count))


def _fold(ctx: RuleContext, gradient: str, channels: int, spatial_from: int) -> str:
    """Reshape [M, N, C, (K), *spatial] to [M*N*C, channels, *spatial] (spatial read at run time)."""
    target = ctx.emit("Concat", [ctx.ints([-1, channels]), ctx.shape_of(gradient, spatial_from)], axis=0)
    return ctx.emit("Reshape", [gradient, target])


# ---- GlobalAveragePool / GlobalMaxPool --------------------------------------------------------
def _global_axes(ctx: RuleContext, node: onnx.NodeProto) -> list[int]:
    """Spatial axes of the forward input (2 .. rank - 1)."""
    return list(range(2, ctx.require_rank(node.input[0], node)))


def _global_average_factor(ctx: RuleContext, node: onnx.NodeProto) -> str:
    x, y = node.input[0], node.output[0]
    shape = ctx.static_shape(x)
    if shape is not None and all(isinstance(d, int) for d in shape[2:]):
        return ctx.scalar(1.0 / int(np.prod(shape[2:])), like=x)  # type: ignore[arg-type]
    sizes = [ctx.emit("Cast", [ctx.emit("Size", [name])], to=ctx.elem_type(x)) for name in (y, x)]
    return ctx.emit("Div", sizes)


@vjp_rule("GlobalAveragePool")
def global_average_pool_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Spread the cotangent evenly over the spatial positions."""
    scaled = ctx.emit("Mul", [ctx.require_gradient(grads[0], node), _global_average_factor(ctx, node)])
    return [ctx.expand_lead(scaled, node.input[0])]


@jvp_rule("GlobalAveragePool")
def global_average_pool_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The spatial mean of the tangent."""
    axes = [a + 1 for a in _global_axes(ctx, node)]
    return [ctx.reduce("ReduceMean", ctx.require_gradient(tangents[0], node), axes, keepdims=True)]


def _global_max_weights(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """(x == max) / (number of maxima) per channel: ties share the gradient."""
    x, y = node.input[0], node.output[0]
    mask = ctx.emit("Cast", [ctx.emit("Equal", [x, y])], to=ctx.elem_type(x))
    return ctx.emit("Div", [mask, ctx.reduce_sum(mask, _global_axes(ctx, node), keepdims=True)])


@vjp_rule("GlobalMaxPool")
def global_max_pool_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cotangent goes to the maximal position(s) of each channel."""
    return [ctx.emit("Mul", [ctx.require_gradient(grads[0], node), _global_max_weights(ctx, node)])]


@jvp_rule("GlobalMaxPool")
def global_max_pool_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent at the spatial maximum (ties averaged)."""
    weighted = ctx.emit("Mul", [ctx.require_gradient(tangents[0], node), _global_max_weights(ctx, node)])
    return [ctx.reduce_sum(weighted, [a + 1 for a in _global_axes(ctx, node)], keepdims=True)]


# ---- AveragePool ------------------------------------------------------------------------------
def _taps_inside(win: Window) -> np.ndarray:
    """Per output position (up to ``max_out``), how many window taps fall inside the input."""
    per_axis = []
    for n, b, o, s, k, d in zip(
        win.in_dims, win.begins, win.max_out, win.strides, win.kernel, win.dilations, strict=True
    ):
        positions = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - b
        per_axis.append(((positions >= 0) & (positions < n)).sum(axis=1))
    counts = per_axis[0]
    for more in per_axis[1:]:
        counts = np.multiply.outer(counts, more)
    return counts


def _average_factor(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> str:
    """[1, 1, *out]: 1 / divisor of each output, as the runtime computes the forward op."""
    x = node.input[0]
    dtype = ctx.float_dtype(x)
    ones = ctx.constant(np.ones([1, 1, *win.in_dims], dtype=dtype), "ones")
    averaged_ones = ctx.emit("AveragePool", [ones], **attributes_of(node))
    inside = np.maximum(_taps_inside(win), 1).astype(dtype).reshape(1, 1, *win.max_out)
    count = len(win.kernel)
    inside_now = ctx.slice(ctx.constant(inside, "taps"), [0] * count, ctx.shape_of(averaged_ones, 2), _spatial(count))
    return ctx.emit("Div", [averaged_ones, inside_now])


@vjp_rule("AveragePool")
def average_pool_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Scale the cotangent by 1/divisor and scatter it over each window (ConvTranspose of ones)."""
    x = node.input[0]
    win = window(ctx, node)
    scaled = ctx.emit("Mul", [ctx.require_gradient(grads[0], node), _average_factor(ctx, node, win)])
    ones = ctx.constant(np.ones([1, 1, *win.kernel], dtype=ctx.float_dtype(x)), "window")
    return [ctx.reshape_like(_col2im(ctx, _fold(ctx, scaled, 1, 3), ones, win), x)]


@jvp_rule("AveragePool")
def average_pool_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """AveragePool is linear: pool the tangent (lead axis folded into the batch)."""
    window(ctx, node)  # refuses what the VJP refuses (ceil_mode window in the padding)
    pooled = ctx.emit("AveragePool", [ctx.fold_lead(ctx.require_gradient(tangents[0], node))], **attributes_of(node))
    return [ctx.unfold_lead(pooled)]


# ---- MaxPool ----------------------------------------------------------------------------------
def _one_hot_taps(ctx: RuleContext, win: Window, like: str) -> str:
    """Weight [K, 1, *kernel]: filter k picks tap k (row-major order, as ``itertools.product``)."""
    return ctx.constant(np.eye(win.taps, dtype=ctx.float_dtype(like)).reshape(win.taps, 1, *win.kernel), "taps")


def _winning_tap(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> str:
    """int64 [N, C, 1, *out]: which window tap holds the maximum (the first one at a tie).

    The taps are extracted exactly (Pad with -inf, one strided Slice per tap), so ArgMax sees the
    very values MaxPool compared.
    """
    x = node.input[0]
    count = len(win.kernel)
    padded = _pad(ctx, x, win.begins, win.padded_ends, value=-math.inf)
    taps = []
    for offset in itertools.product(*[range(k) for k in win.kernel]):
        starts = [o * d for o, d in zip(offset, win.dilations, strict=True)]
        stops = [start + (out - 1) * s + 1 for start, out, s in zip(starts, win.max_out, win.strides, strict=True)]
        taps.append(ctx.unsqueeze(ctx.slice(padded, starts, stops, _spatial(count), win.strides), [2]))
    stacked = ctx.emit("Concat", taps, axis=2) if len(taps) > 1 else taps[0]
    return ctx.emit("ArgMax", [stacked], axis=2, keepdims=1)


def _input_positions(win: Window) -> np.ndarray:
    """int64 [K, *out]: flat spatial index in the input of tap k of each window (clipped inside)."""
    grids = []
    for n, b, o, s, k, d in zip(
        win.in_dims, win.begins, win.max_out, win.strides, win.kernel, win.dilations, strict=True
    ):
        grids.append(np.clip(np.arange(k)[:, None] * d + np.arange(o)[None, :] * s - b, 0, n - 1))  # [k, o]
    flat = np.zeros([*win.kernel, *win.max_out], dtype=np.int64)
    count = len(win.kernel)
    for axis, grid in enumerate(grids):
        shape = [1] * (2 * count)
        shape[axis], shape[count + axis] = grid.shape
        flat = flat * win.in_dims[axis] + grid.reshape(shape)
    return flat.reshape(win.taps, *win.max_out)


def _argmax_index(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> str:
    """int64 [N, C, P]: flat spatial input index of each output's maximum (P = output positions)."""
    tap = _winning_tap(ctx, node, win)
    table = ctx.constant(_input_positions(win)[None, None], "positions")  # [1, 1, K, *out]
    expanded = ctx.emit(
        "Expand", [table, ctx.emit("Concat", [ctx.shape_of(tap, 0, 2), ctx.ints([win.taps, *win.max_out])], axis=0)]
    )
    index = ctx.emit("GatherElements", [expanded, tap], axis=2)  # [N, C, 1, *out]
    return ctx.emit(
        "Reshape", [index, ctx.emit("Concat", [ctx.shape_of(node.output[0], 0, 2), ctx.ints([-1])], axis=0)]
    )


def _flat_lead(ctx: RuleContext, gradient: str, forward: str) -> str:
    """[M, N, C, *spatial] -> [M, N, C, prod(spatial)]."""
    return ctx.emit(
        "Reshape", [gradient, ctx.emit("Concat", [ctx.lead_dim(), ctx.shape_of(forward, 0, 2), ctx.ints([-1])], axis=0)]
    )


def _lead_index(ctx: RuleContext, index: str, like: str) -> str:
    """Broadcast an index [N, C, P] over the lead axis to the shape of the gradient ``like``."""
    return ctx.emit("Expand", [ctx.unsqueeze(index, [0]), ctx.emit("Shape", [like])])


def _tiles(win: Window) -> bool:
    """Whether the windows tile the input: stride = kernel, no dilation, no padding, no remainder."""
    return (
        win.strides == win.kernel
        and all(d == 1 for d in win.dilations)
        and not any(win.begins)
        and not any(win.ends)
        and all(n % k == 0 for n, k in zip(win.in_dims, win.kernel, strict=True))
    )


def _tile_shape(win: Window) -> list[int]:
    """Spatial dims split into (output, tap) pairs: [o1, k1, o2, k2, ...]."""
    return [size for o, k in zip(win.max_out, win.kernel, strict=True) for size in (o, k)]


def _one_hot(ctx: RuleContext, index: str, taps: int, axis: int, rank: int, like: str) -> str:
    """1 where ``index`` (size 1 on ``axis``) names the tap, along ``axis`` of ``taps`` entries; ``like``'s type."""
    shape = [1] * rank
    shape[axis] = taps
    order = ctx.constant(np.arange(taps, dtype=np.int64).reshape(shape), "taps")
    return ctx.emit("Cast", [ctx.emit("Equal", [index, order])], to=ctx.elem_type(like))


def _winner_mask(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> str:
    """[N, C, o1, k1, o2, k2, ...]: 1 at each window's maximum (the tap ``_winning_tap`` names), else 0.

    Computed from the forward input alone, so the kept-forward split runs it once per sample.
    """
    count = len(win.kernel)
    one_hot = _one_hot(ctx, _winning_tap(ctx, node, win), win.taps, axis=2, rank=3 + count, like=node.input[0])
    # [N, C, K, *out] -> [N, C, k1, k2, ..., o1, o2, ...] -> interleaved [N, C, o1, k1, o2, k2, ...]
    split = ctx.emit("Reshape", [one_hot, ctx.ints([0, 0, *win.kernel, *win.max_out])])  # 0: N, C as they are
    perm = [0, 1] + [axis for i in range(count) for axis in (2 + count + i, 2 + i)]
    return ctx.transpose(split, perm)


def _square_blocks(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> bool:
    """Whether a float pool's windows are SpaceToDepth's blocks: 2-D, k x k, tiling the input."""
    return (
        len(win.kernel) == 2
        and win.kernel[0] == win.kernel[1]
        and _tiles(win)
        and ctx.elem_type(node.input[0]) == onnx.TensorProto.FLOAT
        and ctx.opset >= DEPTH_TO_SPACE_MODE
    )


def _winner_mask_by_blocks(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> str:
    """``_winner_mask_like_input`` for square 2-D windows: SpaceToDepth, ArgMax, DepthToSpace.

    SpaceToDepth puts tap (a, b) of every window in channel block a * k + b (row-major, the tap
    order ``_winning_tap`` uses), so ArgMax over the blocks names the same first maximum, and
    DepthToSpace (DCR, the inverse arrangement) writes the one-hot back in the input's layout:
    exact copies, no padding, no 6-D Transpose. VGG-11-BN's forward half at 3x224x224 (its five
    2 x 2 pools): 212 -> 191 ms median (``benchmarks/winner_masks.py``, benchmarks/README.md).
    Float only, where the two depth ops are sure to have ONNX Runtime kernels.
    """
    k = win.kernel[0]
    blocks = ctx.emit("SpaceToDepth", [node.input[0]], blocksize=k)  # [N, k*k*C, *out]
    taps = ctx.emit("Reshape", [blocks, ctx.ints([0, win.taps, -1, *win.max_out])])  # [N, k*k, C, *out]
    winner = ctx.emit("ArgMax", [taps], axis=1, keepdims=1)  # the first maximum at a tie
    one_hot = _one_hot(ctx, winner, win.taps, axis=1, rank=5, like=node.input[0])  # [N, k*k, C, *out]
    flat = ctx.emit("Reshape", [one_hot, ctx.ints([0, -1, *win.max_out])])
    return ctx.emit("DepthToSpace", [flat], blocksize=k, mode="DCR")


def _winner_mask_like_input(ctx: RuleContext, node: onnx.NodeProto, win: Window) -> str:
    """``_winner_mask`` in the pool input's own layout [N, C, *spatial] (windows that tile the input)."""
    if _square_blocks(ctx, node, win):
        return _winner_mask_by_blocks(ctx, node, win)
    return ctx.emit("Reshape", [_winner_mask(ctx, node, win), ctx.ints([0, 0, *win.in_dims])])


def _tiled_lead(ctx: RuleContext, tensor: str, win: Window) -> str:
    """[M, N, C, *spatial] as [M, N, C, o1, k1, o2, k2, ...]: each window's taps on axes of their own."""
    return ctx.emit("Reshape", [tensor, ctx.ints([0, 0, 0, *_tile_shape(win)])])  # 0: M, N, C as they are


@vjp_rule("MaxPool")
def max_pool_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Route each output's cotangent to its window's maximum; overlapping windows accumulate.

    Windows that tile the input (VGG's 2 x 2 / 2 pools), from opset 13: the cotangent repeated
    over its window times the winner mask (exact, and no scatter). Measured on VGG-11 at
    3x224x224 (one cotangent, 2 threads, profiled): its five pools' ScatterElements and the
    Expands feeding them took 20.9 of the VJP half's 88 ms. Otherwise, from opset 16 a
    ScatterElements 'add' at the argmax indices; before, the one-hot of the winning tap
    scattered by a one-hot ConvTranspose (no scatter reduction exists).
    """
    x = node.input[0]
    win = window(ctx, node)
    g = grads[0]
    if _tiles(win) and ctx.opset >= RESIZE_WITHOUT_ROI:
        # Each cotangent repeated over its window by a nearest Resize (scale k, floor of x / k),
        # then one Mul by the mask in the input's layout, broadcast over the lead axis only: a
        # broadcast over size-1 inner axes instead ran 16 Muls in 26 ms on VGG-11.
        scales = ctx.constant(np.array([1.0, 1.0, *win.kernel], dtype=np.float32), "scales")
        repeated = ctx.emit(
            "Resize", [ctx.fold_lead(g), "", scales],  # type: ignore[arg-type]
            mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )
        return [ctx.emit("Mul", [ctx.reshape_like(repeated, x), _winner_mask_like_input(ctx, node, win)])]
    if ctx.opset >= SCATTER_REDUCTION:
        updates = _flat_lead(ctx, g, node.output[0])  # type: ignore[arg-type]
        zeros = _flat_lead(ctx, ctx.zeros_lead_like(x), x)
        index = _lead_index(ctx, _argmax_index(ctx, node, win), updates)
        scattered = ctx.emit("ScatterElements", [zeros, index, updates], axis=3, reduction="add")
        return [ctx.reshape_like(scattered, x)]
    mask = _one_hot(ctx, _winning_tap(ctx, node, win), win.taps, axis=2, rank=3 + len(win.kernel), like=x)
    weighted = ctx.emit("Mul", [ctx.unsqueeze(g, [3]), mask])  # type: ignore[arg-type]
    columns = _fold(ctx, weighted, win.taps, 4)
    return [ctx.reshape_like(_col2im(ctx, columns, _one_hot_taps(ctx, win, x), win), x)]


@jvp_rule("MaxPool")
def max_pool_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Gather the tangent at each window's maximum (the Indices output has no tangent)."""
    x, y = node.input[0], node.output[0]
    win = window(ctx, node)
    if _tiles(win) and _is_power_of_two(win.taps) and ctx.elem_type(x) == onnx.TensorProto.FLOAT:
        # The tangent times the winner mask scaled by the window's size, averaged over each
        # window: one non-zero term per window, and a power of two scales and divides it
        # exactly (a tangent above float32's max / taps would overflow, far past anything a
        # network's later layers survive). A 4-D pool in the input's layout, where the tiled
        # form's 6-D Mul and ReduceSum pulled every pool input out of ONNX Runtime's blocked
        # layout: measured on VGG-11 at 3x224x224 (one tangent, 2 threads, profiled), those two
        # and the reorders before them took 17% of the JVP half. Float only: ONNX Runtime's
        # AveragePool kernel is.
        scaled = ctx.emit("Mul", [_winner_mask_like_input(ctx, node, win), ctx.scalar(float(win.taps), like=x)])
        picked = ctx.emit("Mul", [ctx.require_gradient(tangents[0], node), scaled])
        pooled = ctx.emit("AveragePool", [ctx.fold_lead(picked)], kernel_shape=win.kernel, strides=win.kernel)
        return [ctx.reshape_like(pooled, y)]
    if _tiles(win):  # windows that tile the input: the masked tangent summed over each window (exact)
        tiles = _tiled_lead(ctx, ctx.require_gradient(tangents[0], node), win)
        picked = ctx.emit("Mul", [tiles, _winner_mask(ctx, node, win)])
        count = len(win.kernel)
        return [ctx.reshape_like(ctx.reduce_sum(picked, [4 + 2 * i for i in range(count)]), y)]
    flat = _flat_lead(ctx, ctx.require_gradient(tangents[0], node), x)
    index = _argmax_index(ctx, node, win)
    target = ctx.emit("Concat", [ctx.lead_dim(), ctx.emit("Shape", [index])], axis=0)
    gathered = ctx.emit("GatherElements", [flat, ctx.emit("Expand", [ctx.unsqueeze(index, [0]), target])], axis=3)
    return [ctx.reshape_like(gathered, y)]


def _is_power_of_two(count: int) -> bool:
    return count > 0 and count & (count - 1) == 0

