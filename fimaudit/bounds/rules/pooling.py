"""Pooling and reductions.

MaxPool: |max(a) - max(b)| <= max |a - b| <= ||(a - b) on the window||_2, and summing the
squares over all windows counts every input entry once per window covering it, so the gain is
sqrt(c), c = the largest number of windows covering one input entry (1 when windows do not
overlap; 4 for 3x3 stride 2 in 2-D, so gain 2).

AveragePool is linear and separable: its matrix is the Kronecker product of one small matrix
per spatial axis (the divisor is a product per axis too), so its norm is the product of their
exact norms, computed densely. Where ONNX Runtime's divisor for a window hanging over the
border is uncertain (ceil_mode with count_include_pad) the smallest possible divisor is used:
the matrix is entrywise non-negative, so larger entries give a larger norm (Perron-Frobenius),
and the bound stays above the truth either way.

GlobalAveragePool / ReduceMean over n entries: the mean has norm 1 / sqrt(n) per output.
ReduceSum: sqrt(n). ReduceMax/Min, GlobalMaxPool: 1. ReduceL2: 1 (a norm is 1-Lipschitz).
"""

from __future__ import annotations

import math

import numpy as np

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import certify, spectral_norm
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound
from fimaudit.graph.padding import resolve_pads


def _pool_geometry(ctx: NodeContext) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(input sizes, kernel, strides, dilations, pads [begin..., end...]) with auto_pad resolved."""
    spatial = list(ctx.shape(0)[2:])
    kernel = ctx.attr_ints("kernel_shape")
    if kernel is None:  # required by the operator schema (the checker refuses such a model)
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r} has no kernel_shape")
    rank = len(kernel)
    strides = ctx.attr_ints("strides") or [1] * rank
    dilations = ctx.attr_ints("dilations") or [1] * rank
    if len(spatial) != rank:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: the input does not match the kernel")
    try:
        begin, end = resolve_pads(
            ctx.attr_str("auto_pad", "NOTSET"), ctx.attr_ints("pads"), spatial, kernel, strides, dilations
        )
    except ValueError as exc:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: {exc}") from None
    return spatial, kernel, strides, dilations, begin + end


def _axis_windows(
    size: int, k: int, stride: int, dilation: int, begin: int, end: int, ceil_mode: bool
) -> list[list[int]]:
    """For one axis: the in-bounds input indices each output window reads."""
    extent = (k - 1) * dilation + 1
    span = size + begin + end - extent
    count = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (count - 1) * stride >= size + begin:
        count -= 1  # the last window must start inside the input or left padding (ONNX rule)
    windows = []
    for m in range(max(count, 0)):
        start = m * stride - begin
        windows.append([start + j * dilation for j in range(k) if 0 <= start + j * dilation < size])
    return windows


@layer_bound("MaxPool")
def max_pool_bound(ctx: NodeContext) -> LayerGain:
    """sqrt(largest number of windows covering one input entry)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"MaxPool node {ctx.name!r}: unexpected inputs")
    if len([o for o in ctx.node.output if o]) > 1 and ctx.node.output[1] in ctx.view.consumers:
        raise BoundUnavailable(f"MaxPool node {ctx.name!r}: its argmax indices are used downstream")
    spatial, kernel, strides, dilations, pads = _pool_geometry(ctx)
    ceil_mode = bool(ctx.attr_int("ceil_mode", 0))
    rank = len(kernel)
    coverage = 1
    for axis in range(rank):
        windows = _axis_windows(
            spatial[axis], kernel[axis], strides[axis], dilations[axis], pads[axis], pads[axis + rank], ceil_mode
        )
        counts = np.zeros(spatial[axis], dtype=np.int64)
        for window in windows:
            counts[window] += 1
        coverage *= int(counts.max(initial=1))
    gain = certify(math.sqrt(coverage))
    return LayerGain({0: gain}, f"sqrt(windows covering an entry) = sqrt({coverage})", magnitude=ctx.magnitude(0))


@layer_bound("AveragePool")
def average_pool_bound(ctx: NodeContext) -> LayerGain:
    """Product over axes of the exact norm of each axis's averaging matrix."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"AveragePool node {ctx.name!r}: unexpected inputs")
    spatial, kernel, strides, dilations, pads = _pool_geometry(ctx)
    ceil_mode = bool(ctx.attr_int("ceil_mode", 0))
    include_pad = bool(ctx.attr_int("count_include_pad", 0))
    rank = len(kernel)
    gain = 1.0
    for axis in range(rank):
        windows = _axis_windows(
            spatial[axis], kernel[axis], strides[axis], dilations[axis], pads[axis], pads[axis + rank], ceil_mode
        )
        matrix = np.zeros((len(windows), spatial[axis]))
        for row, window in enumerate(windows):
            if not window:
                continue
            divisor = kernel[axis] if include_pad and not ceil_mode else len(window)
            matrix[row, window] = 1.0 / divisor
        gain *= spectral_norm(matrix)
    return LayerGain({0: gain}, "exact norm of the separable averaging matrix", magnitude=ctx.magnitude(0))


@layer_bound("GlobalAveragePool")
def global_average_pool_bound(ctx: NodeContext) -> LayerGain:
    """GlobalAveragePool: a mean over n entries per channel has norm exactly 1/sqrt(n)."""
    n = int(np.prod(ctx.shape(0)[2:]))
    return LayerGain(
        {0: certify(1.0 / math.sqrt(n))}, f"mean over {n} entries: 1/sqrt({n})", magnitude=ctx.magnitude(0)
    )


@layer_bound("GlobalMaxPool")
def global_max_pool_bound(ctx: NodeContext) -> LayerGain:
    """GlobalMaxPool: one window per channel, so 1-Lipschitz."""
    return LayerGain({0: 1.0}, "max over one window", magnitude=ctx.magnitude(0))


def _reduced_count(ctx: NodeContext) -> int:
    """Entries reduced into each output, from the axes attribute (or input, opset >= 18)."""
    shape = ctx.shape(0)
    axes = ctx.attr_ints("axes")
    if axes is None and len(ctx.node.input) > 1 and ctx.node.input[1]:
        value = ctx.const(1)
        if value is None:
            raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: axes are computed at run time")
        axes = [int(a) for a in value.reshape(-1)]
    if not axes:
        if ctx.attr_int("noop_with_empty_axes", 0):
            return 1
        axes = list(range(len(shape)))
    normal = {a % len(shape) for a in axes}
    if 0 in normal and shape[0] != 1:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r} reduces over the batch axis")
    return int(np.prod([shape[a] for a in normal]))


@layer_bound("ReduceMean")
def reduce_mean_bound(ctx: NodeContext) -> LayerGain:
    """ReduceMean over n entries per output: exactly 1/sqrt(n)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"ReduceMean node {ctx.name!r}: unexpected inputs")
    n = _reduced_count(ctx)
    return LayerGain(
        {0: certify(1.0 / math.sqrt(n))}, f"mean over {n} entries: 1/sqrt({n})", magnitude=ctx.magnitude(0)
    )


@layer_bound("ReduceSum")
def reduce_sum_bound(ctx: NodeContext) -> LayerGain:
    """ReduceSum over n entries per output: exactly sqrt(n)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"ReduceSum node {ctx.name!r}: unexpected inputs")
    n = _reduced_count(ctx)
    return LayerGain({0: certify(math.sqrt(n))}, f"sum over {n} entries: sqrt({n})", magnitude=n * ctx.magnitude(0))


@layer_bound("ReduceMax", "ReduceMin")
def reduce_max_bound(ctx: NodeContext) -> LayerGain:
    """ReduceMax / ReduceMin over disjoint groups: 1-Lipschitz."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: unexpected inputs")
    _reduced_count(ctx)
    return LayerGain({0: 1.0}, "max/min over disjoint groups", magnitude=ctx.magnitude(0))


@layer_bound("ReduceL2")
def reduce_l2_bound(ctx: NodeContext) -> LayerGain:
    """ReduceL2: a Euclidean norm of each group is 1-Lipschitz."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"ReduceL2 node {ctx.name!r}: unexpected inputs")
    n = _reduced_count(ctx)
    return LayerGain({0: 1.0}, "a Euclidean norm is 1-Lipschitz", magnitude=math.sqrt(n) * ctx.magnitude(0))
