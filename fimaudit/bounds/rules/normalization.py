"""Normalisation layers: inference BatchNorm, LayerNorm, InstanceNorm.

BatchNorm at inference is a per-channel affine map: gain max_c |gamma_c / sqrt(var_c + eps)|.

LayerNorm, y = gamma * (x - mean) / sqrt(var + eps) + beta over each row of n features, has
Jacobian diag(gamma) (P - c c^T / (n s^2)) / s with c = x - mean, s = sqrt(var + eps),
P = I - 1 1^T / n. Since c lies in P's range and ||c||^2 / (n s^2) = var / (var + eps) < 1,
the middle factor has norm <= 1, so the row's gain is <= max|gamma| / s:
- local (this sample): max over rows of max|gamma| / sqrt(var_row + eps), exact activations;
- global (every input): max|gamma| / sqrt(eps), reached near constant rows. Finite (eps > 0)
  but large: the honest price of a statement for all inputs.
The output is bounded whatever the input: |c_i| / s <= sqrt(n - 1), which is what makes the
attention that follows a LayerNorm globally boundable.
InstanceNorm is the same with one row per channel over the spatial axes.
"""

from __future__ import annotations

import math

import numpy as np

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import certify
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound

LOCAL_NOTE = "local: row variances of this sample's activations"


@layer_bound("BatchNormalization")
def batchnorm_bound(ctx: NodeContext) -> LayerGain:
    """Inference BatchNorm: max |gamma / sqrt(var + eps)| over channels."""
    if ctx.attr_int("training_mode", 0):
        raise BoundUnavailable(f"BatchNormalization node {ctx.name!r} runs in training mode (batch statistics)")
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"BatchNormalization node {ctx.name!r}: input-dependent parameters")
    scale = ctx.require_const(1, "the scale").astype(np.float64)
    bias = ctx.require_const(2, "the bias").astype(np.float64)
    mean = ctx.require_const(3, "the running mean").astype(np.float64)
    var = ctx.require_const(4, "the running variance").astype(np.float64)
    eps = ctx.attr_float("epsilon", 1e-5)
    factor = np.abs(scale) / np.sqrt(var + eps)
    gain = certify(float(factor.max()))
    shift = np.abs(bias - scale * mean / np.sqrt(var + eps))
    magnitude = gain * ctx.magnitude(0) + float(shift.max())
    return LayerGain({0: gain}, "max |gamma / sqrt(var + eps)|", magnitude=magnitude)


def _rows(value: np.ndarray, axis: int) -> np.ndarray:
    axis = axis % value.ndim
    return np.asarray(value, dtype=np.float64).reshape(int(np.prod(value.shape[:axis])), -1)


@layer_bound("LayerNormalization", local=True)
def layernorm_bound(ctx: NodeContext) -> LayerGain:
    """max|gamma| / sqrt(var_row + eps): per row locally, with var = 0 globally."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"LayerNormalization node {ctx.name!r}: input-dependent scale or bias")
    shape = ctx.shape(0)
    axis = ctx.attr_int("axis", -1) % len(shape)
    eps = ctx.attr_float("epsilon", 1e-5)
    features = int(np.prod(shape[axis:]))
    scale = np.broadcast_to(ctx.require_const(1, "the scale").astype(np.float64), shape[axis:])
    bias = ctx.const(2)
    bias = np.zeros(shape[axis:]) if bias is None else np.broadcast_to(bias.astype(np.float64), shape[axis:])
    top = float(np.abs(scale).max())
    magnitude = float((np.abs(scale) * math.sqrt(max(features - 1, 0)) + np.abs(bias)).max())
    global_gain = certify(top / math.sqrt(eps))
    value = ctx.value(0) if ctx.local else None
    if value is None:
        return LayerGain({0: global_gain}, "max|gamma| / sqrt(eps) (variance may vanish)", magnitude=magnitude,
                         assumption="global: valid for every input", outputs=(0,))
    variance = _rows(value, axis).var(axis=1)
    gain = certify(top / math.sqrt(float(variance.min()) + eps))
    return LayerGain({0: min(gain, global_gain)}, "max|gamma| / sqrt(min row variance + eps)", magnitude=magnitude,
                     assumption=LOCAL_NOTE, outputs=(0,))


@layer_bound("InstanceNormalization", local=True)
def instancenorm_bound(ctx: NodeContext) -> LayerGain:
    """Per channel |scale_c| / sqrt(var_c + eps) over the spatial axes."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"InstanceNormalization node {ctx.name!r}: input-dependent scale or bias")
    shape = ctx.shape(0)
    eps = ctx.attr_float("epsilon", 1e-5)
    scale = np.abs(ctx.require_const(1, "the scale").astype(np.float64)).reshape(-1)
    bias = np.abs(ctx.require_const(2, "the bias").astype(np.float64)).reshape(-1)
    spatial = int(np.prod(shape[2:]))
    magnitude = float((scale * math.sqrt(max(spatial - 1, 0)) + bias).max())
    global_gain = certify(float(scale.max()) / math.sqrt(eps))
    value = ctx.value(0) if ctx.local else None
    if value is None:
        return LayerGain(
            {0: global_gain}, "max|scale| / sqrt(eps)", magnitude=magnitude, assumption="global: valid for every input"
        )
    rows = np.asarray(value, dtype=np.float64).reshape(shape[0] * shape[1], -1)
    variance = rows.var(axis=1).reshape(shape[0], shape[1])
    gain = certify(float((scale[None, :] / np.sqrt(variance + eps)).max()))
    return LayerGain(
        {0: min(gain, global_gain)}, "max_c |scale_c| / sqrt(var_c + eps)", magnitude=magnitude, assumption=LOCAL_NOTE
    )
