"""Convolutions: a certified bound on the l2 operator norm.

The bound uses the real stride, padding, dilation and groups.

The argument (per spatial axis; axes multiply):

0. Taps that only ever read padding are dropped (``active_kernel``); the remaining taps read
   a padded input of length P = (out - 1) s + extent (a zero-padding or cropping of x: norm <= 1).
1. Zero padding is an isometric embedding of x into the padded length P.
2. Zero-extend to a ring of length N = s * M, M = ceil(P / s) (another isometric embedding).
   The strided *circular* correlation on that ring, y~[m] = sum_e wd[e] x~[(s m + e) mod N]
   (wd: the kernel with its dilation holes), agrees with the real convolution on every real
   output m, because the real outputs read indices s m + e <= P - 1 < N: no wrap-around.
   Hence ||Conv|| <= ||circular strided correlation||.
3. Split the ring into its s phases x_r[i] = x~[s i + r] (a permutation) and the kernel into
   w_r[j] = wd[s j + r]: y~ = sum_r circ_M(w_r) x_r, a stride-1 circular correlation with
   s * C_in input channels. All circulants on a ring of length M are diagonalised by the same
   unitary DFT, so the norm is max over frequencies w of || [w_0^(w), ..., w_{s-1}^(w)] ||_2,
   a C_out x (s C_in) complex matrix per frequency: exact for the ring, an upper bound for the
   convolution.
4. Groups act on disjoint channel blocks: the norm is the largest group's.

For stride 1 this is the classical FFT bound on the zero-padded size; for strides it is exact
for the ring instead of bounding the strided conv by its stride-1 version (a 2x2 stride-2 patch
embedding gets ||W reshaped||, not up to twice that). When the frequency computation would be
too large, cheaper certified bounds are used: sum over kernel taps of ||W_tap||_2 (a conv is a
sum of shifted 1x1 convolutions, each shift a partial isometry) and sqrt(||A||_1 ||A||_inf).
A power-iteration estimate is never used: it is a lower bound.
"""

from __future__ import annotations

import math

import numpy as np

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import certify, max_spectral_norm, spectral_norm
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound
from fimaudit.graph.padding import resolve_pads

# Floating-point work (frequencies x SVD cost) above which the FFT bound is not attempted.
FFT_BUDGET = 4e10


def _conv_geometry(
    ctx: NodeContext, weight: np.ndarray
) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(input sizes, strides, dilations, begin pads, end pads) for the node's actual input."""
    spatial = list(ctx.shape(0)[2:])
    kernel = list(weight.shape[2:])
    rank = len(kernel)
    if len(spatial) != rank:
        raise BoundUnavailable(f"Conv node {ctx.name!r}: input rank does not match the kernel")
    strides = ctx.attr_ints("strides") or [1] * rank
    dilations = ctx.attr_ints("dilations") or [1] * rank
    try:
        begin, end = resolve_pads(
            ctx.attr_str("auto_pad", "NOTSET"), ctx.attr_ints("pads"), spatial, kernel, strides, dilations
        )
    except ValueError as exc:
        raise BoundUnavailable(f"Conv node {ctx.name!r}: {exc}") from None
    return spatial, strides, dilations, begin, end


def active_kernel(weight: np.ndarray, spatial: list[int], strides: list[int], dilations: list[int],
                  begin: list[int], end: list[int]) -> tuple[np.ndarray, list[int]]:
    """The kernel cropped to the taps that ever meet a real (non-padding) input entry, and what they read.

    What they read: the length of the padded input those taps read, per axis.

    Dropping taps that only ever read padding changes nothing in the operator; on small
    feature maps (a 3x3 kernel on a 1x1 map reads real input only through its centre) it makes
    the bound both exact-er and far cheaper. Output m reads x[m s + t d - begin] for tap t.
    """
    w = np.asarray(weight, dtype=np.float64)
    crop = [slice(None), slice(None)]
    lengths = []
    for axis, (size, stride, dilation, pad_begin, pad_end) in enumerate(
        zip(spatial, strides, dilations, begin, end, strict=True)
    ):
        k = w.shape[2 + axis]
        outputs = (size + pad_begin + pad_end - ((k - 1) * dilation + 1)) // stride + 1
        if outputs < 1:
            raise BoundUnavailable("Conv kernel is larger than its padded input")
        positions = np.arange(outputs)[:, None] * stride + np.arange(k)[None, :] * dilation - pad_begin
        active = np.flatnonzero(((positions >= 0) & (positions < size)).any(axis=0))
        if active.size == 0:
            return np.zeros((w.shape[0], w.shape[1]) + (1,) * (w.ndim - 2)), [1] * (w.ndim - 2)
        inactive = np.setdiff1d(np.arange(k), active)
        if inactive.size:
            index: list[slice | np.ndarray] = [slice(None)] * w.ndim
            index[2 + axis] = inactive
            w = w.copy()
            w[tuple(index)] = 0.0
        first, last = int(active[0]), int(active[-1])
        crop.append(slice(first, last + 1))
        lengths.append((outputs - 1) * stride + (last - first) * dilation + 1)
    return w[tuple(crop)], lengths


def conv_norm_bound(
    weight: np.ndarray,
    padded: list[int],
    strides: list[int],
    dilations: list[int],
    groups: int = 1,
    budget: float = FFT_BUDGET,
) -> tuple[float, str]:
    """Certified upper bound on ||Conv|| (see the module docstring) and the method used."""
    w = np.asarray(weight, dtype=np.float64)
    c_out, c_in_g = w.shape[:2]
    kernel = list(w.shape[2:])
    if c_out % groups:
        raise BoundUnavailable(f"Conv weight has {c_out} output channels, not divisible by group={groups}")
    per_group = np.split(w, groups, axis=0)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if any(e > p for e, p in zip(extents, padded, strict=True)):
        raise BoundUnavailable("Conv kernel is larger than its padded input")
    cheap = _l1_linf_bound(w, groups, strides, extents)
    if all(e == 1 for e in extents):
        value = max(spectral_norm(g.reshape(g.shape[0], -1)) for g in per_group)
        return min(value, cheap), "1x1 convolution: spectral norm of the channel matrix"
    rings = [math.ceil(p / s) for p, s in zip(padded, strides, strict=True)]
    phases = int(np.prod(strides))
    frequencies = int(np.prod(rings[:-1])) * (rings[-1] // 2 + 1)
    rows, cols = w.shape[0] // groups, c_in_g * phases
    cost = groups * frequencies * min(rows, cols) ** 2 * max(rows, cols)
    if cost > budget:
        cheap = min(cheap, _tap_sum_bound(per_group))
        return cheap, "sum over taps of tap norms / sqrt(||A||_1 ||A||_inf) (FFT bound too large to compute)"
    # All groups in one stack: the max over groups of the max over frequencies is the max over both.
    taps = [math.ceil(e / s) for e, s in zip(extents, strides, strict=True)]
    blocks = _phase_blocks(_dilate(w, dilations), strides, taps)  # [c_out, c_in_g * phases, *taps]
    matrices = _ring_spectrum(blocks.reshape(groups, rows, cols, -1), taps, rings)
    value = max_spectral_norm(matrices)
    per_group_sum = np.abs(w).reshape(groups, -1).sum(axis=1).max()
    # The old FFT's term, or the direct DFT's rounding (T + 2 roundings per entry) when larger.
    terms = max(1e-12 * math.log2(max(2, int(np.prod(rings)))), 4.0 * (int(np.prod(taps)) + 2) * 2.0**-53)
    absolute = float(per_group_sum) * terms
    stride_note = "strided, polyphase" if phases > 1 else "stride 1"
    return min(certify(value, absolute), cheap), f"circular-convolution FFT bound on the padded input ({stride_note})"


def _ring_spectrum(blocks: np.ndarray, taps: list[int], rings: list[int]) -> np.ndarray:
    """The blocks' DFT on the ring at the half-spectrum frequencies: [F * groups, rows, cols] complex.

    ``blocks`` is [groups, rows, cols, T] with T = prod(taps) nonzero positions of a ring of
    sizes ``rings``. A direct DFT as two real matrix products (cos and sin of the T x F phases):
    the kernels have a handful of taps on rings of dozens, so this is T/log(N) times the work
    of a zero-padded FFT's but runs in BLAS, lands in the layout the norms need, and never
    holds the padded ring (64 x 64 channels on a 58 x 58 ring is 110 MB). Its rounding, at
    most about (T + 2) u sum|w|, is inside the caller's absolute margin. A real
    kernel's spectrum at -f is the conjugate of that at f (same singular values), so only
    frequencies with the last coordinate in [0, M/2] are needed, as with rfftn.
    """
    groups, rows, cols, count = blocks.shape
    positions = np.stack(np.meshgrid(*[np.arange(t) for t in taps], indexing="ij"), axis=-1).reshape(count, -1)
    half = [*rings[:-1], rings[-1] // 2 + 1]
    grid = np.stack(np.meshgrid(*[np.arange(f) for f in half], indexing="ij"), axis=-1).reshape(-1, len(rings))
    angles = 2.0 * np.pi * ((grid[:, None, :] * positions[None, :, :]) / np.asarray(rings)).sum(axis=-1)  # [F, T]
    flat = np.ascontiguousarray(np.moveaxis(blocks, -1, 0)).reshape(count, -1)  # [T, groups*rows*cols]
    spectrum = (np.cos(angles) @ flat) - 1j * (np.sin(angles) @ flat)
    return spectrum.reshape(-1, rows, cols)


def _dilate(weight: np.ndarray, dilations: list[int]) -> np.ndarray:
    if all(d == 1 for d in dilations):
        return weight
    kernel = weight.shape[2:]
    shape = [*weight.shape[:2], *[(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]]
    out = np.zeros(shape, dtype=weight.dtype)
    out[(slice(None), slice(None), *[slice(None, None, d) for d in dilations])] = weight
    return out


def _phase_blocks(weight: np.ndarray, strides: list[int], rings: list[int]) -> np.ndarray:
    """[c_out, c_in, E...] -> [c_out, c_in * prod(s), M...] with w_r[j] = w[s j + r]."""
    c_out, c_in = weight.shape[:2]
    rank = len(strides)
    padded = np.zeros((c_out, c_in, *[s * m for s, m in zip(strides, rings, strict=True)]), dtype=weight.dtype)
    padded[(slice(None), slice(None), *[slice(0, e) for e in weight.shape[2:]])] = weight
    # split every spatial axis of length s*M into (M, s): index e = j * s + r
    split_shape = [c_out, c_in]
    for s, m in zip(strides, rings, strict=True):
        split_shape += [m, s]
    split = padded.reshape(split_shape)
    ring_axes = [2 + 2 * i for i in range(rank)]
    phase_axes = [3 + 2 * i for i in range(rank)]
    ordered = split.transpose([0, 1, *phase_axes, *ring_axes])
    return ordered.reshape(c_out, c_in * int(np.prod(strides)), *rings)


def _tap_sum_bound(per_group: list[np.ndarray]) -> float:
    """Sum over kernel taps of ||W[:, :, tap]||_2, largest over groups."""
    best = 0.0
    for g in per_group:
        taps = g.reshape(g.shape[0], g.shape[1], -1)
        total = sum(spectral_norm(taps[:, :, t]) for t in range(taps.shape[2]))
        best = max(best, total)
    return best


def _l1_linf_bound(weight: np.ndarray, groups: int, strides: list[int], extents: list[int]) -> float:
    """sqrt(||A||_1 ||A||_inf) of the conv matrix, each norm bounded by sums over all taps.

    ||A||_inf: an output reads at most every tap of every input channel of its group.
    ||A||_1: an input entry is read by at most prod(ceil(E / s)) positions of each tap
    pattern; bounded here by summing every tap of every output channel reading it.
    """
    a = np.abs(weight)
    c_out = a.shape[0]
    row = a.reshape(c_out, -1).sum(axis=1).max()
    per_group = np.split(a, groups, axis=0)
    column = max(float(g.sum(axis=(0, *range(2, g.ndim))).max()) for g in per_group)
    return certify(math.sqrt(float(row) * column))


@layer_bound("Conv")
def conv_bound(ctx: NodeContext) -> LayerGain:
    """Conv with constant weights: the FFT / polyphase bound (bias does not change the gain)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"Conv node {ctx.name!r}: input-dependent weights are not supported")
    weight = ctx.require_const(1, "the weight")
    spatial, strides, dilations, begin, end = _conv_geometry(ctx, weight)
    groups = ctx.attr_int("group", 1) or 1
    cropped, padded = active_kernel(weight, spatial, strides, dilations, begin, end)
    value, method = _cached_bound(cropped, padded, strides, dilations, groups)
    bias = ctx.const(2)
    per_output = np.abs(weight.astype(np.float64)).reshape(weight.shape[0], -1).sum(axis=1).max()
    magnitude = float(per_output) * ctx.magnitude(0) + (
        float(np.abs(bias).max()) if bias is not None and bias.size else 0.0
    )
    return LayerGain({0: value}, method, magnitude=magnitude)


_CACHE: dict[tuple, tuple[float, str]] = {}


def _cached_bound(
    weight: np.ndarray, padded: list[int], strides: list[int], dilations: list[int], groups: int
) -> tuple[float, str]:
    """Memoised conv_norm_bound (the same weights are bounded once per process, not per sample)."""
    key = (
        weight.shape,
        hash(np.ascontiguousarray(weight).tobytes()),
        tuple(padded),
        tuple(strides),
        tuple(dilations),
        groups,
    )
    if key not in _CACHE:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        _CACHE[key] = conv_norm_bound(weight, padded, strides, dilations, groups)
    return _CACHE[key]
