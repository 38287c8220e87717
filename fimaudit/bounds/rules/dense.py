"""Dense layers (Gemm, MatMul) and products of two activations (attention's q k^T and a v).

With constant weights the gain is the exact spectral norm (computed by SVD, plus the safety
margin): dY = dX W is a right multiplication, whose norm is ||W||_2, row by row.

With two input-dependent operands (attention), d(AB) = dA B + A dB, so the gains are the
norms of the *other* operand: at a sample (local mode) the exact spectral norms of its
matrices; for all inputs (global mode) a bound from its magnitude, ||B||_2 <= ||B||_F <=
sqrt(rows cols) max|B|, which is finite only when something upstream bounds the activations
(a LayerNorm does: its output is bounded whatever its input).
"""

from __future__ import annotations

import math

import numpy as np

from fimaudit.blas_threads import one_blas_thread
from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import (
    batched_spectral_norms,
    broadcast_copies,
    certify,
    max_abs_row_sum,
    spectral_norm,
)
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound

LOCAL_NOTE = "local: operator norms of the other operand at this sample's activations"


def _as_matrix_stack(shape: tuple[int, ...], left: bool) -> tuple[int, ...]:
    """Numpy matmul's promotion of 1-D operands."""
    if len(shape) == 1:
        return (1, shape[0]) if left else (shape[0], 1)
    return tuple(shape)


def _batch_groups(
    varying_shape: tuple[int, ...], fixed_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    vb, fb = varying_shape[:-2], fixed_shape[:-2]
    rank = max(len(vb), len(fb))
    vb = (1,) * (rank - len(vb)) + tuple(vb)
    fb = (1,) * (rank - len(fb)) + tuple(fb)
    batch = tuple(max(a, b) for a, b in zip(vb, fb, strict=True))
    return vb, fb, batch


def matmul_operator_norm(fixed: np.ndarray, varying_shape: tuple[int, ...], fixed_on_right: bool) -> float:
    """Exact norm of dV -> matmul(dV, F) (or matmul(F, dV)) for numpy-broadcast batches.

    Every batch entry of dV meets the F matrices of the batch entries that broadcast onto it;
    their products land in disjoint outputs, so the norm for that dV entry is the norm of
    those F's stacked side by side (right product) or on top of each other (left product).
    """
    f = np.asarray(fixed, dtype=np.float64)
    f = f.reshape(_as_matrix_stack(f.shape, left=not fixed_on_right))
    vshape = _as_matrix_stack(tuple(varying_shape), left=fixed_on_right)
    vb, fb, batch = _batch_groups(vshape, f.shape)
    f_full = np.broadcast_to(f.reshape((*fb, *f.shape[-2:])), (*batch, *f.shape[-2:]))
    if int(np.prod(vb)) == int(np.prod(batch)):
        # One F per dV entry: the norm is the largest of their norms. Broadcasting only repeats
        # F's own matrices (each at least once), so the largest over F's stack is that maximum:
        # no copy is decomposed, and no np.unique over float rows (on a ViT's attention
        # operands it took 5.6 of a 9 s per-sample bound). One BLAS thread: these are small
        # matrices (attention heads), whose threaded LAPACK calls cost 10x their arithmetic on
        # a busy machine (4 x 65 x 65: 35 ms on two threads, 3.8 ms on one, load 6).
        if f_full.ndim == 2:
            return spectral_norm(f_full)
        with one_blas_thread():
            return certify(float(batched_spectral_norms(f.reshape(-1, *f.shape[-2:])).max()))
    best = 0.0
    for index in np.ndindex(*vb):
        selector = tuple(slice(None) if size == 1 else i for i, size in zip(index, vb, strict=True))
        group = f_full[selector].reshape(-1, *f.shape[-2:])
        stacked = np.concatenate(list(group), axis=1 if fixed_on_right else 0)
        best = max(best, spectral_norm(stacked))
    return best


def _magnitude_norm_bound(shape: tuple[int, ...], magnitude: float, copies: int) -> float:
    """||B_b||_2 <= ||B_b||_F <= sqrt(rows cols) max|B|, times sqrt(copies) for broadcasting."""
    rows, cols = _as_matrix_stack(shape, left=True)[-2:]
    return math.sqrt(rows * cols * copies) * magnitude


def _bilinear(ctx: NodeContext, a_index: int, b_index: int, scale: float, a_value, b_value,
              a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[dict[int, float], str, str | None]:
    """Gains for d(A B) = dA B + A dB (A at ``a_index``, B at ``b_index``, both varying)."""
    if ctx.local and a_value is not None and b_value is not None:
        gain_a = scale * matmul_operator_norm(b_value, a_shape, fixed_on_right=True)
        gain_b = scale * matmul_operator_norm(a_value, b_shape, fixed_on_right=False)
        return {a_index: gain_a, b_index: gain_b}, "product of two activations: norms of the operands", LOCAL_NOTE
    magnitude_a, magnitude_b = ctx.magnitude(a_index), ctx.magnitude(b_index)
    if not (math.isfinite(magnitude_a) and math.isfinite(magnitude_b)):
        raise BoundUnavailable(
            f"{ctx.node.op_type} node {ctx.name!r} multiplies two input-dependent tensors whose size is not "
            "bounded for all inputs (a global bound needs a bounded input domain or a normalisation before it)"
        )
    out = ctx.output_shape()
    gain_a = scale * _magnitude_norm_bound(b_shape, magnitude_b, broadcast_copies(_batch(a_shape), _batch(out)))
    gain_b = scale * _magnitude_norm_bound(a_shape, magnitude_a, broadcast_copies(_batch(b_shape), _batch(out)))
    return ({a_index: gain_a, b_index: gain_b}, "product of two activations: sqrt(rows cols) x their magnitude bounds",
            "global: activation magnitudes bounded upstream")


def _batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[:-2]) if len(shape) > 2 else ()


def _two_activations(ctx: NodeContext) -> bool:
    return len([i for i in ctx.varying_inputs() if i < 2]) == 2


@layer_bound("MatMul", local=_two_activations)
def matmul_bound(ctx: NodeContext) -> LayerGain:
    """X W or W X with constant W: exact spectral norm; two activations: see the module doc."""
    varying = ctx.varying_inputs()
    a_shape, b_shape = ctx.shape(0), ctx.shape(1)
    k = a_shape[-1]
    if varying == [0]:
        weight = ctx.require_const(1, "the weight")
        gain = matmul_operator_norm(weight, a_shape, fixed_on_right=True)
        w2 = weight.reshape(_as_matrix_stack(weight.shape, left=False))
        magnitude = max_abs_row_sum(np.swapaxes(w2, -1, -2)) * ctx.magnitude(0)
        return LayerGain({0: gain}, "spectral norm of the weight", magnitude=magnitude)
    if varying == [1]:
        weight = ctx.require_const(0, "the weight")
        gain = matmul_operator_norm(weight, b_shape, fixed_on_right=False)
        magnitude = max_abs_row_sum(weight.reshape(_as_matrix_stack(weight.shape, left=True))) * ctx.magnitude(1)
        return LayerGain({1: gain}, "spectral norm of the weight", magnitude=magnitude)
    gains, method, assumption = _bilinear(ctx, 0, 1, 1.0, ctx.value(0), ctx.value(1), a_shape, b_shape)
    magnitude = k * ctx.magnitude(0) * ctx.magnitude(1)
    return LayerGain(gains, method, magnitude=magnitude, assumption=assumption)


@layer_bound("Gemm", local=_two_activations)
def gemm_bound(ctx: NodeContext) -> LayerGain:
    """Y = alpha A' B' + beta C (A' = A or A^T, B' likewise)."""
    alpha = ctx.attr_float("alpha", 1.0)
    beta = ctx.attr_float("beta", 1.0)
    trans_a, trans_b = ctx.attr_int("transA", 0), ctx.attr_int("transB", 0)
    varying = set(ctx.varying_inputs())
    gains: dict[int, float] = {}
    method, assumption = "spectral norm of the weight", None
    magnitude = 0.0

    def operand(index: int, transpose: int) -> np.ndarray | None:
        value = ctx.value(index) if ctx.local or not ctx.varying(index) else None
        if value is None:
            return None
        # The weight's own dtype: its norms convert (or accumulate) in float64 themselves, and a
        # float64 copy of VGG-11's 4096 x 25088 weight is 822 MB and 1.4 s.
        matrix = np.asarray(value)
        return matrix.T if transpose else matrix

    a_shape = ctx.shape(0)
    b_shape = ctx.shape(1)
    a_rows = a_shape[::-1] if trans_a else a_shape  # A' shape
    b_rows = b_shape[::-1] if trans_b else b_shape  # B' shape
    if varying & {0, 1} == {0}:
        weight = operand(1, trans_b)
        if weight is None:
            raise BoundUnavailable(f"Gemm node {ctx.name!r}: the weight is not a constant")
        copied = None if trans_a else copied_from(ctx, 0)
        if copied is None:
            gains[0] = abs(alpha) * spectral_norm(weight)
        else:
            gains[0] = abs(alpha) * spectral_norm(_restricted(weight, copied))
            method = "spectral norm of the weight on the span of its copied input (a nearest Resize before it)"
        magnitude += abs(alpha) * max_abs_row_sum(weight.T) * ctx.magnitude(0)
    elif varying & {0, 1} == {1}:
        weight = operand(0, trans_a)
        if weight is None:
            raise BoundUnavailable(f"Gemm node {ctx.name!r}: the weight is not a constant")
        gains[1] = abs(alpha) * spectral_norm(weight)
        magnitude += abs(alpha) * max_abs_row_sum(weight) * ctx.magnitude(1)
    elif varying & {0, 1} == {0, 1}:
        a_value, b_value = (None if v is None else v.astype(np.float64) for v in (operand(0, trans_a),
                                                                                   operand(1, trans_b)))
        pair, method, assumption = _bilinear(ctx, 0, 1, abs(alpha), a_value, b_value, tuple(a_rows), tuple(b_rows))
        gains.update(pair)
        magnitude += abs(alpha) * a_rows[-1] * ctx.magnitude(0) * ctx.magnitude(1)
    if 2 in varying:
        out = ctx.output_shape()
        gains[2] = abs(beta) * math.sqrt(broadcast_copies(ctx.shape(2), out))
    if ctx.has_input(2):
        magnitude += abs(beta) * ctx.magnitude(2)
    return LayerGain(gains, method, magnitude=magnitude, assumption=assumption)


def copied_from(ctx: NodeContext, index: int) -> np.ndarray | None:
    """Which entry of an earlier tensor each column of input ``index`` copies, else None.

    Why: torchvision's VGG and AlexNet at inputs below 224 x 224 upsample a 1 x 1 (or 2 x 2)
    map to 7 x 7 before the first classifier layer, so that Gemm (4096 x 25088 for VGG-11) only
    ever sees inputs whose 49 copies of a pixel are equal. Its gain on that span is the norm of
    a 4096 x 512 matrix (see ``_restricted``), not of the 4096 x 25088 weight: exact where the
    plain norm is up to sqrt(49) loose, and 49 times fewer flops than the Gram matrix of the
    full weight (0.84 TFLOP in float64, 27 of VGG-11's 73 s cold bound; 12.6 of the dynamo
    export's 22 s, whose repetition is a GatherND, before ``bounds/copies.py`` followed it).

    Applies when input ``index`` is [1, n] and every column is a copy of an entry of one earlier
    tensor, through ops that only move entries (``copies.copy_sources``); the nodes on that chain
    bound their own gains (at least the copy map's norm, sqrt of the largest copy count), so the
    composition stays an upper bound.
    """
    from fimaudit.bounds.copies import copy_sources

    shape = ctx.view.shape(ctx.input_name(index))
    if shape is None or len(shape) != 2 or shape[0] != 1:
        return None
    found = copy_sources(ctx.view, ctx.input_name(index))
    if found is None:
        return None
    sources = found[1]
    return sources if sources.size == shape[1] else None


def _restricted(weight: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """W restricted to inputs u with u_j = z_{sources[j]}: the matrix Q^T W of that span.

    With R the 0/1 copy matrix (u = R z) and D = R^T R = diag(copies of each entry), Q = R D^{-1/2}
    has orthonormal columns spanning the inputs, so sup ||u W|| / ||u|| over them is ||Q^T W||:
    the rows of W summed per source entry, divided by sqrt(copies). Entries never copied drop out.
    """
    counts = np.bincount(sources)
    used = np.flatnonzero(counts)
    # Rows grouped by source entry and summed group by group (np.add.reduceat): 0.1 s for VGG-11's
    # 25088 x 4096 weight, against 2.9 s as a sparse product (the weight is a transposed view).
    order = np.argsort(sources, kind="stable")
    ordered = sources[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    rows = np.asarray(weight)
    if not np.array_equal(order, np.arange(order.size)):
        rows = rows[order]
    return np.add.reduceat(rows, starts, axis=0, dtype=np.float64) / np.sqrt(counts[used])[:, None]
