"""Gradient rules of activations: ReLU family, Clip, sigmoid/tanh family, Erf, GELU, Softmax.

Unary activations register their pointwise derivative f'(x) once (``pointwise_rule``); the VJP
and the JVP are the product of the gradient with it. At kinks the one-sided choice is stated
per op (ReLU: 0 at x = 0, as in PyTorch); the tests sample away from kinks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx

from fimaudit.autodiff.context import RuleContext, optional_input
from fimaudit.autodiff.registry import jvp_rule, pointwise_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, float_attribute, int_attribute


def _indicator(ctx: RuleContext, condition: str, like: str) -> str:
    """A boolean tensor as 0/1 in the float type of ``like``."""
    return ctx.emit("Cast", [condition], to=ctx.elem_type(like))


def _positive(ctx: RuleContext, x: str) -> str:
    return ctx.emit("Greater", [x, ctx.scalar(0.0, like=x)])


# ---- ReLU family ----------------------------------------------------------------------------
@pointwise_rule("Relu")
def relu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 where x > 0, else 0 (0 at the kink)."""
    x = node.input[0]
    return _indicator(ctx, _positive(ctx, x), x)


@pointwise_rule("LeakyRelu")
def leaky_relu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 where x > 0, else alpha (default 0.01)."""
    x = node.input[0]
    alpha = float_attribute(node, "alpha", 0.01)
    return ctx.emit("Where", [_positive(ctx, x), ctx.scalar(1.0, like=x), ctx.scalar(alpha, like=x)])


@pointwise_rule("ThresholdedRelu")
def thresholded_relu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 where x > alpha (default 1), else 0."""
    x = node.input[0]
    alpha = float_attribute(node, "alpha", 1.0)
    return _indicator(ctx, ctx.emit("Greater", [x, ctx.scalar(alpha, like=x)]), x)


@pointwise_rule("Elu")
def elu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 where x > 0, else alpha exp(x) = y + alpha."""
    x, y = node.input[0], node.output[0]
    alpha = float_attribute(node, "alpha", 1.0)
    negative = ctx.emit("Add", [y, ctx.scalar(alpha, like=x)])
    return ctx.emit("Where", [_positive(ctx, x), ctx.scalar(1.0, like=x), negative])


@pointwise_rule("Selu")
def selu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """Gamma where x > 0, else gamma alpha exp(x) = y + gamma alpha."""
    x, y = node.input[0], node.output[0]
    alpha = float_attribute(node, "alpha", 1.67326319217681884765625)
    gamma = float_attribute(node, "gamma", 1.05070102214813232421875)
    negative = ctx.emit("Add", [y, ctx.scalar(gamma * alpha, like=x)])
    return ctx.emit("Where", [_positive(ctx, x), ctx.scalar(gamma, like=x), negative])


@pointwise_rule("Celu")
def celu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 where x > 0, else exp(x / alpha)."""
    x = node.input[0]
    alpha = float_attribute(node, "alpha", 1.0)
    negative = ctx.emit("Exp", [ctx.emit("Div", [x, ctx.scalar(alpha, like=x)])])
    return ctx.emit("Where", [_positive(ctx, x), ctx.scalar(1.0, like=x), negative])


@vjp_rule("PRelu")
def prelu_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Y = x (x > 0) or slope x: dx gets 1 or slope; a slope on the path gets x where x <= 0."""
    g = ctx.require_gradient(grads[0], node)
    x, slope = node.input
    y = node.output[0]
    positive = _positive(ctx, x)
    grad_x = None
    if ctx.needs_gradient(x):
        grad_x = ctx.emit("Mul", [g, ctx.emit("Where", [positive, ctx.scalar(1.0, like=x), slope])])
    grad_slope = None
    if ctx.needs_gradient(slope):
        local = ctx.emit("Where", [positive, ctx.scalar(0.0, like=x), x])
        grad_slope = ctx.unbroadcast(ctx.emit("Mul", [g, local]), slope, y)
    return [grad_x, grad_slope]


@jvp_rule("PRelu")
def prelu_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D PRelu(x, slope) = dx where x > 0, slope dx (+ x dslope) elsewhere."""
    tx, tslope = tangents
    x, slope = node.input
    y = node.output[0]
    positive = _positive(ctx, x)
    terms = []
    if tx is not None:
        terms.append(ctx.emit("Mul", [tx, ctx.emit("Where", [positive, ctx.scalar(1.0, like=x), slope])]))
    if tslope is not None:
        local = ctx.emit("Where", [positive, ctx.scalar(0.0, like=x), x])
        terms.append(ctx.emit("Mul", [ctx.lift(tslope, slope, y), local]))
    return [ctx.accumulate(terms)]


# ---- Clip -----------------------------------------------------------------------------------
def _clip_bounds(ctx: RuleContext, node: onnx.NodeProto) -> tuple[str | None, str | None]:
    """Clip's min and max as tensor names: attributes before opset 11, optional inputs after."""
    x = node.input[0]
    if ctx.opset < 11:
        low = attribute(node, "min")
        high = attribute(node, "max")
        return (
            ctx.scalar(float(low), like=x) if low is not None else None,  # type: ignore[arg-type]
            ctx.scalar(float(high), like=x) if high is not None else None,  # type: ignore[arg-type]
        )
    return optional_input(node, 1), optional_input(node, 2)


def _clip_inside(ctx: RuleContext, node: onnx.NodeProto) -> str | None:
    """Boolean: min <= x <= max (None when Clip has no bounds: the identity)."""
    x = node.input[0]
    low, high = _clip_bounds(ctx, node)
    conditions = []
    if low is not None:
        conditions.append(ctx.emit("Not", [ctx.emit("Less", [x, low])]))
    if high is not None:
        conditions.append(ctx.emit("Not", [ctx.emit("Greater", [x, high])]))
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else ctx.emit("And", conditions)


def _check_clip_bounds(ctx: RuleContext, node: onnx.NodeProto) -> None:
    if any(ctx.needs_gradient(name) for name in node.input[1:]):
        raise UnsupportedOpError(
            f"Clip node {node.name!r}: bounds computed from the input are not supported", ["Clip"]
        )


@vjp_rule("Clip")
def clip_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cotangent passes where min <= x <= max (bounds included), else 0."""
    _check_clip_bounds(ctx, node)
    inside = _clip_inside(ctx, node)
    if inside is None:
        return [grads[0]]
    return [ctx.emit("Where", [inside, ctx.require_gradient(grads[0], node), ctx.scalar(0.0, like=node.input[0])])]


@jvp_rule("Clip")
def clip_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent where the input lies strictly inside [min, max], zero where it is clipped."""
    _check_clip_bounds(ctx, node)
    inside = _clip_inside(ctx, node)
    if inside is None:
        return [tangents[0]]
    return [ctx.emit("Where", [inside, ctx.require_gradient(tangents[0], node), ctx.scalar(0.0, like=node.input[0])])]


# ---- sigmoid / tanh family ------------------------------------------------------------------
@pointwise_rule("Sigmoid")
def sigmoid_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """Y (1 - y)."""
    y = node.output[0]
    return ctx.emit("Mul", [y, ctx.emit("Sub", [ctx.scalar(1.0, like=y), y])])


@pointwise_rule("HardSigmoid")
def hard_sigmoid_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """Alpha where 0 < alpha x + beta < 1, else 0."""
    x = node.input[0]
    alpha = float_attribute(node, "alpha", 0.2)
    beta = float_attribute(node, "beta", 0.5)
    linear = ctx.emit("Add", [ctx.emit("Mul", [x, ctx.scalar(alpha, like=x)]), ctx.scalar(beta, like=x)])
    inside = ctx.emit(
        "And",
        [
            ctx.emit("Greater", [linear, ctx.scalar(0.0, like=x)]),
            ctx.emit("Less", [linear, ctx.scalar(1.0, like=x)]),
        ],
    )
    return ctx.emit("Where", [inside, ctx.scalar(alpha, like=x), ctx.scalar(0.0, like=x)])


@pointwise_rule("HardSwish")
def hard_swish_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """Y = x relu6(x + 3) / 6: 0 below -3, 1 above 3, x / 3 + 1/2 between."""
    x = node.input[0]
    middle = ctx.emit("Add", [ctx.emit("Div", [x, ctx.scalar(3.0, like=x)]), ctx.scalar(0.5, like=x)])
    upper = ctx.emit("Where", [ctx.emit("Greater", [x, ctx.scalar(3.0, like=x)]), ctx.scalar(1.0, like=x), middle])
    return ctx.emit("Where", [ctx.emit("Less", [x, ctx.scalar(-3.0, like=x)]), ctx.scalar(0.0, like=x), upper])


@pointwise_rule("Tanh")
def tanh_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 - y^2."""
    y = node.output[0]
    return ctx.emit("Sub", [ctx.scalar(1.0, like=y), ctx.emit("Mul", [y, y])])


@pointwise_rule("Softplus")
def softplus_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """sigmoid(x)."""
    return ctx.emit("Sigmoid", [node.input[0]])


@pointwise_rule("Softsign")
def softsign_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """1 / (1 + |x|)^2."""
    x = node.input[0]
    denominator = ctx.emit("Add", [ctx.scalar(1.0, like=x), ctx.emit("Abs", [x])])
    return ctx.emit("Reciprocal", [ctx.emit("Mul", [denominator, denominator])])


def _gaussian_density(ctx: RuleContext, x: str, scale: float) -> str:
    """Scale * exp(-x^2 / 2)."""
    square = ctx.emit("Mul", [x, x])
    exponent = ctx.emit("Mul", [square, ctx.scalar(-0.5, like=x)])
    return ctx.emit("Mul", [ctx.emit("Exp", [exponent]), ctx.scalar(scale, like=x)])


@pointwise_rule("Erf")
def erf_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """2 / sqrt(pi) exp(-x^2)."""
    x = node.input[0]
    exponent = ctx.emit("Neg", [ctx.emit("Mul", [x, x])])
    return ctx.emit("Mul", [ctx.emit("Exp", [exponent]), ctx.scalar(2.0 / math.sqrt(math.pi), like=x)])


@pointwise_rule("Gelu")
def gelu_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """Exact: Phi(x) + x phi(x). Tanh approximation: the derivative of that formula."""
    x = node.input[0]
    if attribute(node, "approximate", "none") == "tanh":
        c = math.sqrt(2.0 / math.pi)
        square = ctx.emit("Mul", [x, x])
        cubic = ctx.emit("Mul", [square, x])
        inner = ctx.emit(
            "Mul", [ctx.emit("Add", [x, ctx.emit("Mul", [cubic, ctx.scalar(0.044715, like=x)])]), ctx.scalar(c, like=x)]
        )
        t = ctx.emit("Tanh", [inner])
        one = ctx.scalar(1.0, like=x)
        first = ctx.emit("Mul", [ctx.emit("Add", [one, t]), ctx.scalar(0.5, like=x)])
        inner_slope = ctx.emit(
            "Mul",
            [
                ctx.emit("Add", [one, ctx.emit("Mul", [square, ctx.scalar(3 * 0.044715, like=x)])]),
                ctx.scalar(c, like=x),
            ],
        )
        sech2 = ctx.emit("Sub", [one, ctx.emit("Mul", [t, t])])
        second = ctx.emit("Mul", [ctx.emit("Mul", [ctx.emit("Mul", [x, ctx.scalar(0.5, like=x)]), sech2]), inner_slope])
        return ctx.emit("Add", [first, second])
    cdf = ctx.emit(
        "Mul",
        [
            ctx.emit(
                "Add",
                [
                    ctx.scalar(1.0, like=x),
                    ctx.emit("Erf", [ctx.emit("Mul", [x, ctx.scalar(1 / math.sqrt(2.0), like=x)])]),
                ],
            ),
            ctx.scalar(0.5, like=x),
        ],
    )
    return ctx.emit("Add", [cdf, ctx.emit("Mul", [x, _gaussian_density(ctx, x, 1 / math.sqrt(2 * math.pi))])])


# ---- Softmax / LogSoftmax -------------------------------------------------------------------
def _softmax_axes(ctx: RuleContext, node: onnx.NodeProto) -> list[int]:
    """Axes of the gradient tensor that one softmax normalises over.

    Opset 13+: the single ``axis`` (default -1). Before: the input is coerced to 2-D at ``axis``
    (default 1), so the normalisation runs over all axes from ``axis`` to the end.
    """
    x = node.input[0]
    if ctx.opset >= 13:
        return [ctx.shift_axis(int_attribute(node, "axis", -1))]
    rank = ctx.require_rank(x, node)
    axis = ctx.normalize_axis(int_attribute(node, "axis", 1), rank)
    return [a + 1 for a in range(axis, rank)]


def _softmax_product(ctx: RuleContext, node: onnx.NodeProto, gradient: str) -> str:
    """Y * (v - sum(v y)): Softmax's Jacobian is symmetric, so VJP and JVP coincide."""
    y = node.output[0]
    weighted = ctx.reduce_sum(ctx.emit("Mul", [gradient, y]), _softmax_axes(ctx, node), keepdims=True)
    return ctx.emit("Mul", [y, ctx.emit("Sub", [gradient, weighted])])


@vjp_rule("Softmax")
def softmax_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = y * (g - sum(g y)) over the softmax axes."""
    return [_softmax_product(ctx, node, ctx.require_gradient(grads[0], node))]


@jvp_rule("Softmax")
def softmax_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D softmax(x) = y . (dx - sum(y . dx)) along the softmax axes."""
    return [_softmax_product(ctx, node, ctx.require_gradient(tangents[0], node))]


@vjp_rule("LogSoftmax")
def log_softmax_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = g - softmax(x) * sum(g) over the softmax axes (softmax(x) = exp(y))."""
    g = ctx.require_gradient(grads[0], node)
    probabilities = ctx.emit("Exp", [node.output[0]])
    total = ctx.reduce_sum(g, _softmax_axes(ctx, node), keepdims=True)
    return [ctx.emit("Sub", [g, ctx.emit("Mul", [probabilities, total])])]


@jvp_rule("LogSoftmax")
def log_softmax_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_y = t - sum(softmax(x) t) over the softmax axes."""
    t = ctx.require_gradient(tangents[0], node)
    probabilities = ctx.emit("Exp", [node.output[0]])
    weighted = ctx.reduce_sum(ctx.emit("Mul", [t, probabilities]), _softmax_axes(ctx, node), keepdims=True)
    return [ctx.emit("Sub", [t, weighted])]
