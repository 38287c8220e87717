"""Pointwise activations and softmax: the gain is sup |f'| (global) or max |f'(a)| (local).

Locally, a is this sample's pre-activations (smooth functions only).

Global constants (sup over the real line of |f'|):
ReLU, Clip, Abs, Neg, Tanh, Softplus, Softsign, CELU: 1; LeakyReLU / PReLU: max(1, |slope|);
ELU: max(1, alpha); SELU: gamma * max(1, alpha); Sigmoid: 1/4; HardSigmoid: alpha;
HardSwish: 3/2 (slope (2x + 3) / 6 on (-3, 3)); Erf: 2 / sqrt(pi);
GELU: gelu'(sqrt 2) = Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.12890 (gelu'' = phi (2 - x^2));
SiLU 1.09984, Mish 1.08880, GELU-tanh 1.12928: maxima of the derivative found on a fine grid,
plus a margin larger than the grid can miss (the maximum is flat, the error is O(step^2)).
Softmax: the Jacobian of a row is diag(p) - p p^T, whose norm is <= min(1/2, 1 - sum p^2,
max_i 2 p_i (1 - p_i)) (Gershgorin for the last).
Exp, Log, Sqrt, Reciprocal and Pow have no global constant on an unbounded domain; they get
local gains, and a global one only when the input's magnitude (or sign) is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import certify
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound

LOCAL_NOTE = "local: derivative at this sample's pre-activations"


def _gelu_derivative(x: np.ndarray) -> np.ndarray:
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_tanh_derivative(x: np.ndarray) -> np.ndarray:
    c = math.sqrt(2.0 / math.pi)
    u = c * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)


def _silu_derivative(x: np.ndarray) -> np.ndarray:
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _mish_derivative(x: np.ndarray) -> np.ndarray:
    sp = np.logaddexp(0.0, x)
    t = np.tanh(sp)
    return t + x * (1.0 - t * t) * special.expit(x)


def _grid_sup(derivative: Callable[[np.ndarray], np.ndarray]) -> float:
    """Sup |f'| from a grid of step 1e-4 on [-20, 20] plus 1e-4.

    |f''| < 1 here: the grid misses at most step * sup|f''| <= 1e-4; outside [-20, 20] these
    derivatives are within 1e-6 of 0 or 1.
    """
    grid = np.linspace(-20.0, 20.0, 400_001)
    return float(np.abs(derivative(grid)).max()) + 1e-4


GELU_SUP = certify(float(_gelu_derivative(np.array(math.sqrt(2.0)))))
GELU_TANH_SUP = _grid_sup(_gelu_tanh_derivative)
SILU_SUP = _grid_sup(_silu_derivative)
MISH_SUP = _grid_sup(_mish_derivative)
ERF_SUP = 2.0 / math.sqrt(math.pi)


def _local_max(
    ctx: NodeContext, derivative: Callable[[np.ndarray], np.ndarray], global_gain: float
) -> tuple[float, str | None]:
    """Max |f'(a)| over the sample's pre-activations, never above the global constant."""
    value = ctx.value(0) if ctx.local else None
    if value is None:
        return global_gain, None
    local = certify(float(np.abs(derivative(np.asarray(value, dtype=np.float64))).max(initial=0.0)))
    return min(local, global_gain), LOCAL_NOTE


def _unary(
    ctx: NodeContext, gain: float, method: str, magnitude: float | None = None, assumption: str | None = None
) -> LayerGain:
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: input-dependent parameters are not supported")
    bound = ctx.magnitude(0) * gain if magnitude is None else magnitude
    return LayerGain({0: gain}, method, magnitude=bound, assumption=assumption)


@layer_bound("Relu", "Abs", "Neg", "Identity")
def one_lipschitz_bound(ctx: NodeContext) -> LayerGain:
    """1-Lipschitz and |f(x)| <= |x|."""
    return _unary(ctx, 1.0, f"{ctx.node.op_type} is 1-Lipschitz")


@layer_bound("Clip")
def clip_bound(ctx: NodeContext) -> LayerGain:
    """Clipping to [min, max] (ReLU6 and friends) is 1-Lipschitz."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"Clip node {ctx.name!r}: input-dependent limits")
    limits = [ctx.const(i) for i in (1, 2)] if len(ctx.node.input) > 1 else [ctx.attr("min"), ctx.attr("max")]
    finite = [abs(float(np.asarray(v).reshape(()))) for v in limits if v is not None]
    magnitude = ctx.magnitude(0) if len(finite) < 2 else min(ctx.magnitude(0), max(finite))
    return LayerGain({0: 1.0}, "clipping is 1-Lipschitz", magnitude=magnitude)


@layer_bound("LeakyRelu")
def leaky_relu_bound(ctx: NodeContext) -> LayerGain:
    """LeakyReLU: slopes 1 and alpha, so gain max(1, |alpha|)."""
    alpha = abs(ctx.attr_float("alpha", 0.01))
    return _unary(ctx, max(1.0, alpha), "max(1, |alpha|)")


@layer_bound("PRelu")
def prelu_bound(ctx: NodeContext) -> LayerGain:
    """PReLU with a constant slope tensor: gain max(1, max |slope|)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"PRelu node {ctx.name!r}: input-dependent slope")
    slope = ctx.require_const(1, "the slope")
    gain = max(1.0, float(np.abs(slope).max()))
    return LayerGain({0: gain}, "max(1, max |slope|)", magnitude=gain * ctx.magnitude(0))


@layer_bound("Elu")
def elu_bound(ctx: NodeContext) -> LayerGain:
    """ELU: slope 1 above 0 and alpha e^x <= alpha below, so gain max(1, alpha)."""
    alpha = abs(ctx.attr_float("alpha", 1.0))
    return _unary(ctx, max(1.0, alpha), "max(1, alpha)")


@layer_bound("Selu")
def selu_bound(ctx: NodeContext) -> LayerGain:
    """SELU = gamma ELU_alpha: gain gamma * max(1, alpha)."""
    alpha = abs(ctx.attr_float("alpha", 1.67326319217681884765625))
    gamma = abs(ctx.attr_float("gamma", 1.05070102214813232421875))
    return _unary(ctx, certify(gamma * max(1.0, alpha)), "gamma * max(1, alpha)")


@layer_bound("Celu", "Softsign")
def celu_softsign_bound(ctx: NodeContext) -> LayerGain:
    """CELU and Softsign: derivatives at most 1, so gain 1."""
    return _unary(ctx, 1.0, f"{ctx.node.op_type}' <= 1")


@layer_bound("Softplus", local=True)
def softplus_bound(ctx: NodeContext) -> LayerGain:
    """Softplus: its derivative is the sigmoid, <= 1 (locally its maximum at the pre-activations)."""
    gain, note = _local_max(ctx, special.expit, 1.0)
    return _unary(ctx, gain, "softplus' = sigmoid <= 1", magnitude=ctx.magnitude(0) + math.log(2.0), assumption=note)


@layer_bound("Sigmoid", local=True)
def sigmoid_bound(ctx: NodeContext) -> LayerGain:
    """Sigmoid: sigma' = sigma (1 - sigma) <= 1/4 (locally its maximum at the pre-activations)."""
    gain, note = _local_max(ctx, lambda a: special.expit(a) * (1.0 - special.expit(a)), 0.25)
    return _unary(ctx, gain, "sigmoid' <= 1/4", magnitude=1.0, assumption=note)


@layer_bound("HardSigmoid")
def hard_sigmoid_bound(ctx: NodeContext) -> LayerGain:
    """HardSigmoid clip(alpha x + beta, 0, 1): gain |alpha|."""
    alpha = abs(ctx.attr_float("alpha", 0.2))
    return _unary(ctx, alpha, "|alpha|", magnitude=1.0)


@layer_bound("Tanh", local=True)
def tanh_bound(ctx: NodeContext) -> LayerGain:
    """Tanh: tanh' = 1 - tanh^2 <= 1 (locally its maximum at the pre-activations)."""
    gain, note = _local_max(ctx, lambda a: 1.0 - np.tanh(a) ** 2, 1.0)
    return _unary(ctx, gain, "tanh' <= 1", magnitude=1.0, assumption=note)


@layer_bound("Erf", local=True)
def erf_bound(ctx: NodeContext) -> LayerGain:
    """Erf: erf' = 2/sqrt(pi) exp(-x^2) <= 2/sqrt(pi) (locally its maximum at the pre-activations)."""
    gain, note = _local_max(ctx, lambda a: ERF_SUP * np.exp(-a * a), certify(ERF_SUP))
    return _unary(ctx, gain, "erf' <= 2/sqrt(pi)", magnitude=1.0, assumption=note)


@layer_bound("Gelu", local=True)
def gelu_bound(ctx: NodeContext) -> LayerGain:
    """GELU (exact or tanh form): sup |gelu'| = 1.1289 resp. 1.1293 (locally the maximum at the pre-activations)."""
    if ctx.attr_str("approximate", "none") == "tanh":
        gain, note = _local_max(ctx, _gelu_tanh_derivative, GELU_TANH_SUP)
        return _unary(ctx, gain, "sup |gelu_tanh'| = 1.1293", magnitude=ctx.magnitude(0), assumption=note)
    gain, note = _local_max(ctx, _gelu_derivative, GELU_SUP)
    return _unary(ctx, gain, "sup |gelu'| = gelu'(sqrt 2) = 1.1289", magnitude=ctx.magnitude(0), assumption=note)


@layer_bound("Silu", local=True)
def silu_bound(ctx: NodeContext) -> LayerGain:
    """SiLU x sigma(x): sup |silu'| = 1.0998 (locally the maximum at the pre-activations)."""
    gain, note = _local_max(ctx, _silu_derivative, SILU_SUP)
    return _unary(ctx, gain, "sup |silu'| = 1.0998", magnitude=ctx.magnitude(0), assumption=note)


@layer_bound("Mish", local=True)
def mish_bound(ctx: NodeContext) -> LayerGain:
    """Mish: sup |mish'| = 1.0888 (locally the maximum at the pre-activations)."""
    gain, note = _local_max(ctx, _mish_derivative, MISH_SUP)
    return _unary(ctx, gain, "sup |mish'| = 1.0888", magnitude=ctx.magnitude(0), assumption=note)


@layer_bound("HardSwish")
def hard_swish_bound(ctx: NodeContext) -> LayerGain:
    """X relu6(x + 3) / 6: slope (2x + 3) / 6 on (-3, 3), 1 above, 0 below: sup 3/2."""
    return _unary(ctx, 1.5, "sup |hardswish'| = 3/2", magnitude=ctx.magnitude(0))


def _positive_minimum(ctx: NodeContext, what: str) -> float:
    value = ctx.value(0) if ctx.local else None
    if value is None:
        raise BoundUnavailable(
            f"{ctx.node.op_type} node {ctx.name!r}: {what} has no global Lipschitz constant on an unbounded domain"
        )
    low = float(np.asarray(value, dtype=np.float64).min())
    if not low > 0.0:
        raise BoundUnavailable(f"{ctx.node.op_type} node {ctx.name!r}: input reaches {low:g} <= 0 at this sample")
    return low


@layer_bound("Exp", local=True)
def exp_bound(ctx: NodeContext) -> LayerGain:
    """Exp: exp(max input) at the sample, globally exp(max |input|) when the input is bounded."""
    value = ctx.value(0) if ctx.local else None
    if value is not None:
        gain = certify(math.exp(float(np.asarray(value, dtype=np.float64).max())))
        return _unary(ctx, gain, "exp' = exp, at this sample", magnitude=math.inf, assumption=LOCAL_NOTE)
    top = ctx.magnitude(0)
    if not math.isfinite(top):
        raise BoundUnavailable(f"Exp node {ctx.name!r}: no global Lipschitz constant without a bound on its input")
    return _unary(ctx, certify(math.exp(top)), "exp(max |input|)", magnitude=math.exp(top))


@layer_bound("Log", local=True)
def log_bound(ctx: NodeContext) -> LayerGain:
    """Log: 1 / min input at the sample only (no global constant near 0)."""
    low = _positive_minimum(ctx, "log")
    return _unary(ctx, certify(1.0 / low), "1 / min input, at this sample", magnitude=math.inf, assumption=LOCAL_NOTE)


@layer_bound("Sqrt", local=True)
def sqrt_bound(ctx: NodeContext) -> LayerGain:
    """Sqrt: 1 / (2 sqrt(min input)) at the sample only (no global constant near 0)."""
    low = _positive_minimum(ctx, "sqrt")
    return _unary(
        ctx,
        certify(0.5 / math.sqrt(low)),
        "1 / (2 sqrt(min input)), at this sample",
        magnitude=math.sqrt(ctx.magnitude(0)),
        assumption=LOCAL_NOTE,
    )


@layer_bound("Reciprocal", local=True)
def reciprocal_bound(ctx: NodeContext) -> LayerGain:
    """Reciprocal: 1 / min |input|^2 at the sample only (no global constant near 0)."""
    value = ctx.value(0) if ctx.local else None
    if value is None:
        raise BoundUnavailable(f"Reciprocal node {ctx.name!r}: no global Lipschitz constant")
    low = float(np.abs(np.asarray(value, dtype=np.float64)).min())
    if low == 0.0:
        raise BoundUnavailable(f"Reciprocal node {ctx.name!r}: input reaches 0 at this sample")
    return _unary(
        ctx, certify(1.0 / low**2), "1 / min input^2, at this sample", magnitude=math.inf, assumption=LOCAL_NOTE
    )


@layer_bound("Pow", local=True)
def pow_bound(ctx: NodeContext) -> LayerGain:
    """x^p with constant p: |p| |x|^(p-1) (p >= 1: by magnitude globally, at the sample locally)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"Pow node {ctx.name!r}: input-dependent exponent")
    exponent = ctx.require_const(1, "the exponent")
    if exponent.size != 1:
        raise BoundUnavailable(f"Pow node {ctx.name!r}: non-scalar exponent")
    p = float(exponent.reshape(()))
    if p == 1.0:
        return _unary(ctx, 1.0, "x^1")
    if p == 0.0:
        return LayerGain({0: 0.0}, "x^0 is constant", magnitude=1.0)
    value = ctx.value(0) if ctx.local else None
    if value is not None:
        a = np.abs(np.asarray(value, dtype=np.float64))
        if p < 1.0 and float(a.min()) == 0.0:
            raise BoundUnavailable(f"Pow node {ctx.name!r}: x^{p:g} is not Lipschitz at 0")
        edge = float(a.max()) if p >= 1.0 else float(a.min())
        return _unary(
            ctx,
            certify(abs(p) * edge ** (p - 1.0)),
            f"|p| |x|^(p-1) at this sample (p = {p:g})",
            magnitude=math.inf,
            assumption=LOCAL_NOTE,
        )
    top = ctx.magnitude(0)
    if p < 1.0 or not math.isfinite(top):
        raise BoundUnavailable(
            f"Pow node {ctx.name!r}: x^{p:g} has no global Lipschitz constant without a bound on its input"
        )
    return _unary(ctx, certify(abs(p) * top ** (p - 1.0)), f"|p| max|x|^(p-1) (p = {p:g})", magnitude=top**p)


def _softmax_rows(ctx: NodeContext, probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if ctx.view.opset < 13:
        axis = ctx.attr_int("axis", 1) % p.ndim
        return p.reshape(int(np.prod(p.shape[:axis])), -1)
    axis = ctx.attr_int("axis", -1) % p.ndim
    return np.moveaxis(p, axis, -1).reshape(-1, p.shape[axis])


def softmax_jacobian_norm_bound(rows: np.ndarray) -> float:
    """Max over rows of min(1/2, 1 - sum p^2, max_i 2 p_i (1 - p_i)) >= ||diag(p) - p p^T||."""
    gini = 1.0 - np.sum(rows * rows, axis=1)
    gershgorin = np.max(2.0 * rows * (1.0 - rows), axis=1)
    return float(np.minimum(np.minimum(gini, gershgorin), 0.5).max(initial=0.0))


@layer_bound("Softmax", local=True)
def softmax_bound(ctx: NodeContext) -> LayerGain:
    """Softmax: ||diag(p) - p p^T|| <= 1/2, locally the sharper row bound at this sample's probabilities."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"Softmax node {ctx.name!r}: unexpected inputs")
    output = ctx.output_value(0) if ctx.local else None
    if output is None:
        return LayerGain({0: 0.5}, "||diag(p) - p p^T|| <= 1/2", magnitude=1.0)
    rows = _softmax_rows(ctx, output)
    if not np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):  # not the rows we think: stay global
        return LayerGain({0: 0.5}, "||diag(p) - p p^T|| <= 1/2", magnitude=1.0)
    gain = min(0.5, certify(softmax_jacobian_norm_bound(rows)))
    return LayerGain(
        {0: gain}, "||diag(p) - p p^T|| at this sample's probabilities", magnitude=1.0, assumption=LOCAL_NOTE
    )


@layer_bound("LogSoftmax", local=True)
def log_softmax_bound(ctx: NodeContext) -> LayerGain:
    """Jacobian I - 1 p^T per row: norm <= 1 + sqrt(n) ||p||_2 <= 1 + sqrt(n)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"LogSoftmax node {ctx.name!r}: unexpected inputs")
    output = ctx.output_value(0) if ctx.local else None
    shape = ctx.shape(0)
    if ctx.view.opset < 13:
        length = int(np.prod(shape[ctx.attr_int("axis", 1) % len(shape) :]))
    else:
        length = shape[ctx.attr_int("axis", -1) % len(shape)]
    global_gain = certify(1.0 + math.sqrt(length))
    if output is None:
        return LayerGain({0: global_gain}, "1 + sqrt(n)", magnitude=math.inf)
    rows = _softmax_rows(ctx, np.exp(np.asarray(output, dtype=np.float64)))
    gain = certify(1.0 + math.sqrt(length) * float(np.sqrt((rows * rows).sum(axis=1)).max()))
    return LayerGain({0: min(gain, global_gain)}, "1 + sqrt(n) ||p||", magnitude=math.inf, assumption=LOCAL_NOTE)
