"""Gradient rules of linear layers: Conv, ConvTranspose, Gemm, MatMul, BatchNormalization.

Only the data operand's path is differentiated; weights computed from the input are refused
with UnsupportedOpError rather than silently ignored (no classifier exporter produces them,
except MatMul in attention, where both operands are handled).

Conv and ConvTranspose fold the lead axis M into the batch axis ([M, B, C, ...] -> [M*B, C, ...])
and run the same kind of kernel as the forward pass:
- the adjoint of a stride-1 Conv with constant weights is a Conv with the weights flipped and
  transposed (MLAS's fast kernels), unless the forward reads only a few channels (an image's
  first layer, ``FEW_INPUT_CHANNELS``); otherwise the adjoint of Conv is ConvTranspose with the same
  weights, strides, dilations, group and pads, plus
  ``output_padding = (X + pads - effective kernel) mod stride``, the rows the strided convolution
  never reached, so that the result has exactly the input's spatial shape;
- the adjoint of ConvTranspose is Conv with the same weights, strides, dilations, group and the
  transpose's effective pads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from fimaudit.autodiff.context import RuleContext, optional_input
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, float_attribute, int_attribute, ints_attribute, str_attribute
from fimaudit.graph.padding import same_padding

# An ungrouped Conv reading at most this many channels keeps ConvTranspose as its adjoint even at
# stride 1. Its adjoint writes that many channels, and ONNX Runtime's NCHWc Conv pads its output
# to a block of 8 or 16, computing 2-5x the useful FLOPs, while ConvTranspose is one GEMM of
# k*k*channels rows and a col2im. Measured (benchmarks/conv_adjoint_channels.py, one Conv's VJP
# model, ConvTranspose / Conv time, 2 threads): 3 channels read by 64 at 3x3: 0.59 at 224x224 and
# 1 row, 0.28 at 4 rows, 0.51 at 32x32 and 16 rows, 0.30 at 7x7; 1 channel 0.26; 4 channels
# 0.56; 8 channels 0.87-0.93 (the adjoint alone 0.81-1.05: no clear gain); 16 channels 1.2-1.5.
# Grouped Convs stay flipped Convs (depthwise: ConvTranspose 2-24x slower).
FEW_INPUT_CHANNELS = 4


def _refuse_weight_paths(ctx: RuleContext, node: onnx.NodeProto, data_inputs: int = 1) -> None:
    """Raise when a weight/bias/statistic input is computed from the differentiated input."""
    for name in node.input[data_inputs:]:
        if ctx.needs_gradient(name):
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name!r}: its parameter {name!r} depends on the input; "
                "fimaudit differentiates only the data operand of this op",
                [node.op_type],
            )


def _static_ints(ctx: RuleContext, name: str, node: onnx.NodeProto, what: str) -> list[int]:
    shape = ctx.static_shape(name)
    if shape is None or not all(isinstance(d, int) for d in shape):
        raise UnsupportedOpError(
            f"{node.op_type} node {node.name!r}: the {what} shape of {name!r} must be known "
            f"statically for its gradient (got {shape})",
            [node.op_type],
        )
    return [int(d) for d in shape]  # type: ignore[arg-type]


def _static_spatial(ctx: RuleContext, name: str, node: onnx.NodeProto) -> list[int]:
    """Spatial dims (after batch and channels) of a forward tensor; they must be static."""
    shape = ctx.static_shape(name)
    spatial = None if shape is None else shape[2:]
    if spatial is None or not all(isinstance(d, int) for d in spatial):
        raise UnsupportedOpError(
            f"{node.op_type} node {node.name!r}: the spatial shape of {name!r} must be known "
            f"statically for its gradient (got {shape})",
            [node.op_type],
        )
    return [int(d) for d in spatial]  # type: ignore[arg-type]


def _kernel(ctx: RuleContext, node: onnx.NodeProto) -> list[int]:
    declared = ints_attribute(node, "kernel_shape", [])
    if declared:
        return declared
    return _static_ints(ctx, node.input[1], node, "weight")[2:]


def _spatial_rank(ctx: RuleContext, node: onnx.NodeProto) -> int:
    return ctx.require_rank(node.input[0], node) - 2


def _common(ctx: RuleContext, node: onnx.NodeProto) -> tuple[list[int], list[int], list[int], int]:
    """(kernel, strides, dilations, group) with defaults filled in."""
    rank = _spatial_rank(ctx, node)
    kernel = _kernel(ctx, node)
    strides = ints_attribute(node, "strides", [1] * rank, length=rank)
    dilations = ints_attribute(node, "dilations", [1] * rank, length=rank)
    group = int_attribute(node, "group", 1)
    return kernel, strides, dilations, group


def _conv_pads(
    ctx: RuleContext, node: onnx.NodeProto, kernel: list[int], strides: list[int], dilations: list[int]
) -> tuple[list[int], list[int]]:
    """Conv's explicit (begin, end) pads, resolving auto_pad against the static input shape."""
    rank = len(kernel)
    auto_pad = str_attribute(node, "auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = ints_attribute(node, "pads", [0] * (2 * rank), length=2 * rank)
        return pads[:rank], pads[rank:]
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    spatial = _static_spatial(ctx, node.input[0], node)
    return same_padding(spatial, kernel, strides, dilations, auto_pad)


def _conv_forward_attrs(node: onnx.NodeProto) -> dict[str, object]:
    """The Conv/ConvTranspose attributes that the JVP repeats unchanged."""
    names = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", "output_padding", "output_shape")
    return {name: attribute(node, name) for name in names if attribute(node, name) is not None}


def _adjoint_as_conv(
    ctx: RuleContext, node: onnx.NodeProto, kernel: list[int], strides: list[int], dilations: list[int],
    group: int, begin: list[int], end: list[int],
) -> tuple[str, list[int]] | None:
    """(flipped, transposed weight, pads) of a stride-1 Conv's adjoint written as a Conv; None when it is not one.

    Why: ONNX Runtime's CPU provider runs Conv through MLAS's fast paths (and, at ORT_ENABLE_ALL,
    its NCHWc kernels) but ConvTranspose as a GEMM followed by col2im; measured on 2 threads,
    a 3x3 conv's adjoint on 512 channels at 1x1 took 62.8 ms as ConvTranspose and 0.6 ms as
    Conv, on 64 channels at 56x56 40.7 ms against 19.8 ms; but not for an ungrouped Conv that
    reads ``FEW_INPUT_CHANNELS`` or fewer (see there).

    With stride 1 the adjoint is a correlation with the kernel flipped in space and its two
    channel axes swapped within each group (W'[g, i, j] = W[g, j, i] flipped), padded by
    extent - 1 - pad on each side (extent = (k - 1) d + 1), with the same dilations and group.
    Only for a constant weight (the flipped copy is computed once here) and non-negative pads.
    """
    if any(s != 1 for s in strides):
        return None
    weight = ctx.constant_value(node.input[1])
    if weight is None or weight.ndim != len(kernel) + 2 or weight.shape[0] % group:
        return None
    if group == 1 and weight.shape[1] <= FEW_INPUT_CHANNELS:
        return None
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    pads = [e - 1 - b for e, b in zip(extents, begin, strict=True)]
    pads += [e - 1 - p for e, p in zip(extents, end, strict=True)]
    if any(p < 0 for p in pads):
        return None
    c_out, c_in_g = weight.shape[:2]
    spatial = tuple(weight.shape[2:])
    grouped = weight.reshape(group, c_out // group, c_in_g, *spatial).swapaxes(1, 2)
    flipped = grouped[(slice(None), slice(None), slice(None), *[slice(None, None, -1)] * len(spatial))]
    adjoint = np.ascontiguousarray(flipped.reshape(group * c_in_g, c_out // group, *spatial))
    return ctx.constant(adjoint, "conv_adjoint_weight"), pads


@vjp_rule("Conv")
def conv_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The adjoint of the (folded) cotangent: a Conv with flipped weights at stride 1, else ConvTranspose.

    When the flipped Conv is used: ``_adjoint_as_conv``. ConvTranspose takes the same weights,
    and output_padding restores X's shape.
    """
    _refuse_weight_paths(ctx, node)
    kernel, strides, dilations, group = _common(ctx, node)
    begin, end = _conv_pads(ctx, node, kernel, strides, dilations)
    output_padding = [0] * len(kernel)
    if any(s > 1 for s in strides):
        spatial = _static_spatial(ctx, node.input[0], node)
        output_padding = [
            (size + b + e - ((k - 1) * d + 1)) % s
            for size, b, e, k, d, s in zip(spatial, begin, end, kernel, dilations, strides, strict=True)
        ]
    folded = ctx.fold_lead(ctx.require_gradient(grads[0], node))
    as_conv = _adjoint_as_conv(ctx, node, kernel, strides, dilations, group, begin, end)
    if as_conv is not None:
        weight, pads = as_conv
        pulled = ctx.emit("Conv", [folded, weight], dilations=dilations, group=group, pads=pads, kernel_shape=kernel)
        return [ctx.unfold_lead(pulled)]
    pulled = ctx.emit(
        "ConvTranspose",
        [folded, node.input[1]],
        strides=strides,
        dilations=dilations,
        group=group,
        pads=begin + end,
        kernel_shape=kernel,
        output_padding=output_padding if any(output_padding) else None,
    )
    return [ctx.unfold_lead(pulled)]


@jvp_rule("Conv")
def conv_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The same convolution (no bias) applied to the folded tangent."""
    _refuse_weight_paths(ctx, node)
    pushed = ctx.emit(
        "Conv", [ctx.fold_lead(ctx.require_gradient(tangents[0], node)), node.input[1]], **_conv_forward_attrs(node)
    )
    return [ctx.unfold_lead(pushed)]


def _conv_transpose_pads(
    ctx: RuleContext, node: onnx.NodeProto, kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int]:
    """ConvTranspose's effective (begin + end) pads, as ONNX defines them for auto_pad/output_shape."""
    rank = len(kernel)
    pads = ints_attribute(node, "pads", length=2 * rank)
    auto_pad = str_attribute(node, "auto_pad", "NOTSET")
    output_shape = ints_attribute(node, "output_shape", [])
    if pads is not None and not output_shape:
        return pads
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER") and not output_shape:
        return [0] * (2 * rank)
    spatial = _static_spatial(ctx, node.input[0], node)
    output_padding = ints_attribute(node, "output_padding", [0] * rank, length=rank)
    target = output_shape[-rank:] if output_shape else [size * s for size, s in zip(spatial, strides, strict=True)]
    begin, end = [], []
    for size, k, s, d, extra, out in zip(spatial, kernel, strides, dilations, output_padding, target, strict=True):
        total = s * (size - 1) + extra + (k - 1) * d + 1 - out
        if auto_pad == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    return begin + end


@vjp_rule("ConvTranspose")
def conv_transpose_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Conv of the (folded) cotangent with the same weights, strides, dilations, group and pads."""
    _refuse_weight_paths(ctx, node)
    kernel, strides, dilations, group = _common(ctx, node)
    pads = _conv_transpose_pads(ctx, node, kernel, strides, dilations)
    pulled = ctx.emit(
        "Conv",
        [ctx.fold_lead(ctx.require_gradient(grads[0], node)), node.input[1]],
        strides=strides,
        dilations=dilations,
        group=group,
        pads=pads,
        kernel_shape=kernel,
    )
    return [ctx.unfold_lead(pulled)]


@jvp_rule("ConvTranspose")
def conv_transpose_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The same transposed convolution (no bias) applied to the folded tangent."""
    _refuse_weight_paths(ctx, node)
    attrs = _conv_forward_attrs(node)
    if not attrs.get("kernel_shape"):
        attrs["kernel_shape"] = _kernel(ctx, node)
    pushed = ctx.emit("ConvTranspose", [ctx.fold_lead(ctx.require_gradient(tangents[0], node)), node.input[1]], **attrs)
    return [ctx.unfold_lead(pushed)]


# ---- MatMul ---------------------------------------------------------------------------------
def _swap_last(ctx: RuleContext, forward: str, rank: int) -> str:
    """A forward matrix (batch) with its last two axes swapped; a vector as the matching matrix."""
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return ctx.transpose(forward, perm)


def _matmul_ranks(ctx: RuleContext, node: onnx.NodeProto) -> tuple[int, int, int]:
    a, b = node.input
    return ctx.require_rank(a, node), ctx.require_rank(b, node), ctx.require_rank(node.output[0], node)


@vjp_rule("MatMul")
def matmul_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Numpy matmul with batch broadcasting and 1-D promotion: g_A = g B^T, g_B = A^T g, unbroadcast."""
    g = ctx.require_gradient(grads[0], node)
    a, b = node.input
    y = node.output[0]
    rank_a, rank_b, rank_y = _matmul_ranks(ctx, node)
    # Promote to matrices: a vector A is [1, k], a vector B is [k, 1]; g gains the dropped axes.
    if rank_a == 1 and rank_b == 1:
        g2 = ctx.unsqueeze(g, [1, 2])
    elif rank_a == 1:
        g2 = ctx.unsqueeze(g, [-2])
    elif rank_b == 1:
        g2 = ctx.unsqueeze(g, [-1])
    else:
        g2 = g
    batch = rank_y - (2 - (rank_a == 1) - (rank_b == 1))  # batch axes of y
    grad_a = grad_b = None
    if ctx.needs_gradient(a):
        b_t = ctx.unsqueeze(b, [0]) if rank_b == 1 else _swap_last(ctx, b, rank_b)
        full = ctx.emit("MatMul", [g2, b_t])  # [M, *batch, n, k]
        if rank_a == 1:
            grad_a = ctx.reduce_sum(full, list(range(1, batch + 2)), keepdims=False)
        else:
            result_shape = _batch_dims(ctx, y, batch) + list(ctx.static_shape(a)[-2:])  # type: ignore[index]
            grad_a = ctx.unbroadcast(full, a, result_shape=result_shape)
    if ctx.needs_gradient(b):
        if rank_a >= 2 and rank_b >= 2 and ctx.is_transposed_matrix(b):
            # (A^T g)^T = g^T A: the gradient of a transposed B, emitted transposed; the outer
            # Transpose cancels against the forward Transpose's rule (see is_transposed_matrix).
            full_t = ctx.emit("MatMul", [_swap_last(ctx, g2, rank_y + 1), a])  # [M, *batch, p, k]
            full = _swap_last(ctx, full_t, rank_y + 1)
        else:
            a_t = ctx.unsqueeze(a, [1]) if rank_a == 1 else _swap_last(ctx, a, rank_a)
            full = ctx.emit("MatMul", [a_t, g2])  # [M, *batch, k, p]
        if rank_b == 1:
            grad_b = ctx.reduce_sum(full, [*range(1, batch + 1), -1], keepdims=False)
        else:
            result_shape = _batch_dims(ctx, y, batch) + list(ctx.static_shape(b)[-2:])  # type: ignore[index]
            grad_b = ctx.unbroadcast(full, b, result_shape=result_shape)
    return [grad_a, grad_b]


def _batch_dims(ctx: RuleContext, y: str, batch: int) -> list:
    shape = ctx.static_shape(y)
    assert shape is not None
    return list(shape[:batch])


@jvp_rule("MatMul")
def matmul_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_y = t_A B + A t_B, computed on matrix-promoted operands lifted to the batch rank."""
    ta, tb = tangents
    a, b = node.input
    rank_a, rank_b, rank_y = _matmul_ranks(ctx, node)
    batch = rank_y - (2 - (rank_a == 1) - (rank_b == 1))
    full_rank = batch + 2  # rank of the promoted product, without the lead axis
    terms = []
    if ta is not None:
        promoted = ctx.unsqueeze(ta, [1]) if rank_a == 1 else ta  # [M, 1, k]
        lifted = _lift_rank(ctx, promoted, max(rank_a, 2), full_rank)
        b2 = ctx.unsqueeze(b, [1]) if rank_b == 1 else b
        terms.append(ctx.emit("MatMul", [lifted, b2]))
    if tb is not None:
        promoted = ctx.unsqueeze(tb, [-1]) if rank_b == 1 else tb  # [M, k, 1]
        lifted = _lift_rank(ctx, promoted, max(rank_b, 2), full_rank)
        a2 = ctx.unsqueeze(a, [0]) if rank_a == 1 else a
        terms.append(ctx.emit("MatMul", [a2, lifted]))
    total = ctx.accumulate(terms)  # [M, *batch, n, p]
    squeeze = ([-2] if rank_a == 1 else []) + ([-1] if rank_b == 1 else [])
    if squeeze:
        total = ctx.squeeze(total, [full_rank + 1 + axis for axis in squeeze])
    return [total]


def _lift_rank(ctx: RuleContext, gradient: str, rank: int, target: int) -> str:
    """Insert axes after the lead axis so a [M, *s] gradient of rank(s) = rank reaches ``target``."""
    if rank >= target:
        return gradient
    return ctx.unsqueeze(gradient, list(range(1, target - rank + 1)))


# ---- Gemm -----------------------------------------------------------------------------------
def _scaled(ctx: RuleContext, name: str, factor: float, like: str) -> str:
    return name if factor == 1.0 else ctx.emit("Mul", [name, ctx.scalar(factor, like=like)])


def _gemm_attrs(node: onnx.NodeProto) -> tuple[float, float, bool, bool]:
    return (
        float_attribute(node, "alpha", 1.0),
        float_attribute(node, "beta", 1.0),
        bool(attribute(node, "transA", 0)),
        bool(attribute(node, "transB", 0)),
    )


@vjp_rule("Gemm")
def gemm_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Y = alpha A' B' + beta C: g_A' = alpha g B'^T, g_B' = alpha A'^T g, g_C = beta g (unbroadcast)."""
    g = ctx.require_gradient(grads[0], node)
    a, b = node.input[0], node.input[1]
    c = optional_input(node, 2)
    y = node.output[0]
    alpha, beta, trans_a, trans_b = _gemm_attrs(node)
    grad_a = grad_b = grad_c = None
    if ctx.needs_gradient(a):
        b_prime_t = b if trans_b else ctx.transpose(b, [1, 0])
        pulled = _scaled(ctx, ctx.emit("MatMul", [g, b_prime_t]), alpha, y)  # [M, n, k]
        grad_a = ctx.transpose(pulled, [0, 2, 1]) if trans_a else pulled
    if ctx.needs_gradient(b):
        a_prime_t = a if trans_a else ctx.transpose(a, [1, 0])
        pulled = _scaled(ctx, ctx.emit("MatMul", [a_prime_t, g]), alpha, y)  # [M, k, p]
        grad_b = ctx.transpose(pulled, [0, 2, 1]) if trans_b else pulled
    if c is not None and ctx.needs_gradient(c):
        grad_c = ctx.unbroadcast(_scaled(ctx, g, beta, y), c, y)
    return [grad_a, grad_b, grad_c][: len(node.input)]


@jvp_rule("Gemm")
def gemm_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_Y = alpha (t_A' B' + A' t_B') + beta t_C."""
    ta, tb = tangents[0], tangents[1]
    tc = tangents[2] if len(tangents) > 2 else None
    a, b = node.input[0], node.input[1]
    y = node.output[0]
    alpha, beta, trans_a, trans_b = _gemm_attrs(node)
    terms = []
    if ta is not None:
        ta_prime = ctx.transpose(ta, [0, 2, 1]) if trans_a else ta
        b_prime = ctx.transpose(b, [1, 0]) if trans_b else b
        terms.append(ctx.emit("MatMul", [ta_prime, b_prime]))
    if tb is not None:
        tb_prime = ctx.transpose(tb, [0, 2, 1]) if trans_b else tb
        a_prime = ctx.transpose(a, [1, 0]) if trans_a else a
        terms.append(ctx.emit("MatMul", [a_prime, tb_prime]))
    total = _scaled(ctx, ctx.accumulate(terms), alpha, y) if terms else None
    if tc is not None:
        c_term = _scaled(ctx, ctx.expand_to(tc, node.input[2], y), beta, y)
        total = c_term if total is None else ctx.emit("Add", [total, c_term])
    return [total]


# ---- BatchNormalization (inference) ---------------------------------------------------------
def _batchnorm_slope(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """Scale / sqrt(var + eps), shaped [C, 1, ..., 1] to broadcast over [N, C, *spatial]."""
    if int_attribute(node, "training_mode", 0):
        raise UnsupportedOpError(
            f"BatchNormalization node {node.name!r} runs in training mode (batch statistics); "
            "fimaudit differentiates inference graphs only",
            ["BatchNormalization"],
        )
    _refuse_weight_paths(ctx, node)
    x, scale, _, _, variance = node.input[:5]
    epsilon = float_attribute(node, "epsilon", 1e-5)
    std = ctx.emit("Sqrt", [ctx.emit("Add", [variance, ctx.scalar(epsilon, like=variance)])])
    slope = ctx.emit("Div", [scale, std])
    if ctx.elem_type(scale) != ctx.elem_type(x):
        slope = ctx.emit("Cast", [slope], to=ctx.elem_type(x))
    rank = ctx.require_rank(x, node)
    return ctx.unsqueeze(slope, list(range(1, rank - 1))) if rank > 2 else slope


@vjp_rule("BatchNormalization")
def batch_normalization_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Inference BatchNorm is a per-channel affine map: g_x = g * scale / sqrt(var + eps)."""
    return [ctx.emit("Mul", [ctx.require_gradient(grads[0], node), _batchnorm_slope(ctx, node)])]


@jvp_rule("BatchNormalization")
def batch_normalization_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Inference-mode BatchNormalization: the tangent times scale / sqrt(var + epsilon)."""
    return [ctx.emit("Mul", [ctx.require_gradient(tangents[0], node), _batchnorm_slope(ctx, node)])]
