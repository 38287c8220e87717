"""Gradient rules of elementwise arithmetic: Add, Sub, Mul, Div, Neg, Pow, Sqrt, Exp, Log, Max, ...

Every binary op broadcasts (numpy rules): reverse mode sums the cotangent back down to each
operand's shape with ``ctx.unbroadcast``; forward mode lifts a lower-rank operand's tangent with
``ctx.lift`` (the lead axis M would otherwise misalign right-aligned broadcasting) and expands
to the result's exact shape where needed.

Ties of Max/Min: the gradient is split evenly among the operands equal to the result (as in
PyTorch's ``maximum``); the VJP and JVP rules use the same split, so they stay adjoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from fimaudit.autodiff.context import RuleContext
from fimaudit.autodiff.registry import jvp_rule, vjp_rule, zero_gradient

# Piecewise-constant maps: zero derivative almost everywhere.
zero_gradient("Floor", "Ceil", "Round", "Sign", "IsNaN", "IsInf", "EyeLike", "RandomNormalLike", "RandomUniformLike")


def _sum_tangents(ctx: RuleContext, node: onnx.NodeProto, terms: list[tuple[str, str]]) -> str:
    """Add lifted tangent terms (tangent, its forward operand) and expand to the output's shape."""
    result = node.output[0]
    if len(terms) == 1:
        return ctx.expand_to(terms[0][0], terms[0][1], result)
    total = ctx.accumulate([ctx.lift(t, operand, result) for t, operand in terms])
    if len(terms) == len(node.input):
        return total  # the broadcast of all operands is the result's shape
    return ctx.expand_lead(total, result)


# ---- Add / Sub / Sum / Mean -----------------------------------------------------------------
@vjp_rule("Add")
def add_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d(a + b) = da + db: the cotangent flows to both operands, unbroadcast."""
    g = ctx.require_gradient(grads[0], node)
    return [ctx.unbroadcast(g, name, node.output[0]) if ctx.needs_gradient(name) else None for name in node.input]


@jvp_rule("Add")
def add_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d(a + b) = da + db, lifted and expanded to the result's shape."""
    terms = [(t, name) for t, name in zip(tangents, node.input, strict=True) if t is not None]
    return [_sum_tangents(ctx, node, terms)]


@vjp_rule("Sub")
def sub_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d(a - b) = da - db."""
    g = ctx.require_gradient(grads[0], node)
    a, b = node.input
    y = node.output[0]
    grad_a = ctx.unbroadcast(g, a, y) if ctx.needs_gradient(a) else None
    grad_b = ctx.emit("Neg", [ctx.unbroadcast(g, b, y)]) if ctx.needs_gradient(b) else None
    return [grad_a, grad_b]


@jvp_rule("Sub")
def sub_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d(a - b) = da - db, lifted and expanded to the result's shape."""
    ta, tb = tangents
    a, b = node.input
    terms = []
    if ta is not None:
        terms.append((ta, a))
    if tb is not None:
        terms.append((ctx.emit("Neg", [tb]), b))
    return [_sum_tangents(ctx, node, terms)]


@vjp_rule("Sum")
def sum_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Variadic sum: each operand receives the (unbroadcast) cotangent."""
    return add_vjp(ctx, node, grads)


@jvp_rule("Sum")
def sum_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Variadic sum: the sum of the operands' tangents."""
    return add_jvp(ctx, node, tangents)


@vjp_rule("Mean")
def mean_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Variadic mean: each operand receives 1/n of the (unbroadcast) cotangent."""
    g = ctx.require_gradient(grads[0], node)
    scaled = ctx.emit("Mul", [g, ctx.scalar(1.0 / len(node.input), like=node.output[0])])
    return add_vjp(ctx, node, [scaled])


@jvp_rule("Mean")
def mean_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Variadic mean: 1/n times the sum of the operands' tangents."""
    (total,) = add_jvp(ctx, node, tangents)
    assert total is not None
    return [ctx.emit("Mul", [total, ctx.scalar(1.0 / len(node.input), like=node.output[0])])]


# ---- Mul / Div ------------------------------------------------------------------------------
@vjp_rule("Mul")
def mul_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d(a b) = b da + a db."""
    g = ctx.require_gradient(grads[0], node)
    a, b = node.input
    y = node.output[0]
    grad_a = ctx.unbroadcast(ctx.emit("Mul", [g, b]), a, y) if ctx.needs_gradient(a) else None
    grad_b = ctx.unbroadcast(ctx.emit("Mul", [g, a]), b, y) if ctx.needs_gradient(b) else None
    return [grad_a, grad_b]


@jvp_rule("Mul")
def mul_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d(a b) = b da + a db."""
    ta, tb = tangents
    a, b = node.input
    y = node.output[0]
    terms = []
    if ta is not None:
        terms.append(ctx.emit("Mul", [ctx.lift(ta, a, y), b]))
    if tb is not None:
        terms.append(ctx.emit("Mul", [ctx.lift(tb, b, y), a]))
    # Each term already has the result's full shape: lifted [M, ...a] times the other operand.
    return [ctx.accumulate(terms)]


@vjp_rule("Div")
def div_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d(a / b) = da / b - (a / b) db / b."""
    g = ctx.require_gradient(grads[0], node)
    a, b = node.input
    y = node.output[0]
    grad_a = ctx.unbroadcast(ctx.emit("Div", [g, b]), a, y) if ctx.needs_gradient(a) else None
    grad_b = None
    if ctx.needs_gradient(b):
        scaled = ctx.emit("Mul", [g, ctx.emit("Div", [y, b])])
        grad_b = ctx.emit("Neg", [ctx.unbroadcast(scaled, b, y)])
    return [grad_a, grad_b]


@jvp_rule("Div")
def div_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d(a / b) = da / b - (a / b) db / b."""
    ta, tb = tangents
    a, b = node.input
    y = node.output[0]
    terms = []
    if ta is not None:
        terms.append(ctx.emit("Div", [ctx.lift(ta, a, y), b]))
    if tb is not None:
        terms.append(ctx.emit("Neg", [ctx.emit("Mul", [ctx.lift(tb, b, y), ctx.emit("Div", [y, b])])]))
    total = ctx.accumulate(terms)
    # Div(ta, b) has shape broadcast(a, b) = shape(y); the tb term is a product with y: full shape.
    return [total]


# ---- unary maps -----------------------------------------------------------------------------
@vjp_rule("Neg")
def neg_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d(-a) = -da."""
    return [ctx.emit("Neg", [ctx.require_gradient(grads[0], node)])]


@jvp_rule("Neg")
def neg_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d(-a) = -da."""
    return [ctx.emit("Neg", [ctx.require_gradient(tangents[0], node)])]


def _derivative_product(
    ctx: RuleContext, node: onnx.NodeProto, gradient: str | None, derivative: str
) -> list[str | None]:
    """Shared body of unary rules: the gradient times the pointwise derivative."""
    return [ctx.emit("Mul", [ctx.require_gradient(gradient, node), derivative])]


def _sqrt_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    y = node.output[0]
    return ctx.emit("Div", [ctx.scalar(0.5, like=y), y])


@vjp_rule("Sqrt")
def sqrt_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D sqrt(a) = da / (2 sqrt(a))."""
    return _derivative_product(ctx, node, grads[0], _sqrt_derivative(ctx, node))


@jvp_rule("Sqrt")
def sqrt_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D sqrt(a) = da / (2 sqrt(a))."""
    return _derivative_product(ctx, node, tangents[0], _sqrt_derivative(ctx, node))


def _reciprocal_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    y = node.output[0]
    return ctx.emit("Neg", [ctx.emit("Mul", [y, y])])


@vjp_rule("Reciprocal")
def reciprocal_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d(1/a) = -da / a^2 = -y^2 da."""
    return _derivative_product(ctx, node, grads[0], _reciprocal_derivative(ctx, node))


@jvp_rule("Reciprocal")
def reciprocal_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d(1/a) = -y^2 da."""
    return _derivative_product(ctx, node, tangents[0], _reciprocal_derivative(ctx, node))


@vjp_rule("Exp")
def exp_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D exp(a) = exp(a) da."""
    return _derivative_product(ctx, node, grads[0], node.output[0])


@jvp_rule("Exp")
def exp_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D exp(a) = exp(a) da."""
    return _derivative_product(ctx, node, tangents[0], node.output[0])


@vjp_rule("Log")
def log_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D log(a) = da / a."""
    return [ctx.emit("Div", [ctx.require_gradient(grads[0], node), node.input[0]])]


@jvp_rule("Log")
def log_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D log(a) = da / a."""
    return [ctx.emit("Div", [ctx.require_gradient(tangents[0], node), node.input[0]])]


def _abs_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    return ctx.emit("Sign", [node.input[0]])


@vjp_rule("Abs")
def abs_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """d|a| = sign(a) da (0 at a = 0)."""
    return _derivative_product(ctx, node, grads[0], _abs_derivative(ctx, node))


@jvp_rule("Abs")
def abs_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """d|a| = sign(a) da (0 at a = 0)."""
    return _derivative_product(ctx, node, tangents[0], _abs_derivative(ctx, node))


# ---- Pow ------------------------------------------------------------------------------------
def _float_exponent(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """The exponent in the base's float type (Pow allows an integer exponent since opset 12)."""
    base, exponent = node.input
    if ctx.elem_type(exponent) == ctx.elem_type(base):
        return exponent
    return ctx.emit("Cast", [exponent], to=ctx.elem_type(base))


def _pow_base_derivative(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """B a^(b-1), with the exponent folded into constants when it is one."""
    base, exponent = node.input
    value = ctx.constant_value(exponent)
    dtype = ctx.float_dtype(base)
    if value is not None:
        exponent_value = value.astype(dtype)
        if value.size == 1 and float(exponent_value.reshape(-1)[0]) == 2.0:
            return ctx.emit("Mul", [base, ctx.scalar(2.0, like=base)])
        if value.size == 1 and float(exponent_value.reshape(-1)[0]) == 1.0:
            return ctx.emit("Expand", [ctx.scalar(1.0, like=base), ctx.shape_of(node.output[0])])
        power = ctx.emit("Pow", [base, ctx.constant(exponent_value - 1)])
        return ctx.emit("Mul", [power, ctx.constant(exponent_value)])
    b = _float_exponent(ctx, node)
    power = ctx.emit("Pow", [base, ctx.emit("Sub", [b, ctx.scalar(1.0, like=base)])])
    return ctx.emit("Mul", [power, b])


@vjp_rule("Pow")
def pow_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """D a^b = b a^(b-1) da + a^b log(a) db (the second term only when b is on the path)."""
    g = ctx.require_gradient(grads[0], node)
    base, exponent = node.input
    y = node.output[0]
    grad_base = None
    if ctx.needs_gradient(base):
        grad_base = ctx.unbroadcast(ctx.emit("Mul", [g, _pow_base_derivative(ctx, node)]), base, y)
    grad_exponent = None
    if ctx.needs_gradient(exponent):
        local = ctx.emit("Mul", [y, ctx.emit("Log", [base])])
        grad_exponent = ctx.unbroadcast(ctx.emit("Mul", [g, local]), exponent, y)
    return [grad_base, grad_exponent]


@jvp_rule("Pow")
def pow_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """D a^b = b a^(b-1) da + a^b log(a) db (each term only when its operand has a tangent)."""
    t_base, t_exponent = tangents
    base, exponent = node.input
    y = node.output[0]
    terms = []
    if t_base is not None:
        terms.append(ctx.emit("Mul", [ctx.lift(t_base, base, y), _pow_base_derivative(ctx, node)]))
    if t_exponent is not None:
        local = ctx.emit("Mul", [y, ctx.emit("Log", [base])])
        terms.append(ctx.emit("Mul", [ctx.lift(t_exponent, exponent, y), local]))
    total = ctx.accumulate(terms)
    if t_exponent is None and ctx.static_shape(base) == ctx.static_shape(y):
        return [total]
    return [ctx.expand_lead(total, y)]


# ---- Max / Min (variadic, ties split evenly) ------------------------------------------------
def _selection_weights(ctx: RuleContext, node: onnx.NodeProto) -> list[str]:
    """Per operand: (operand == result) / (number of operands equal to the result)."""
    y = node.output[0]
    masks = [ctx.emit("Cast", [ctx.emit("Equal", [name, y])], to=ctx.elem_type(y)) for name in node.input]
    if len(masks) == 1:
        return masks
    count = ctx.accumulate(masks)
    return [ctx.emit("Div", [mask, count]) for mask in masks]


def _extremum_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    g = ctx.require_gradient(grads[0], node)
    y = node.output[0]
    weights = _selection_weights(ctx, node)
    return [
        ctx.unbroadcast(ctx.emit("Mul", [g, weight]), name, y) if ctx.needs_gradient(name) else None
        for name, weight in zip(node.input, weights, strict=True)
    ]


def _extremum_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    y = node.output[0]
    weights = _selection_weights(ctx, node)
    terms = [
        ctx.emit("Mul", [ctx.lift(t, name, y), weight])
        for t, name, weight in zip(tangents, node.input, weights, strict=True)
        if t is not None
    ]
    return [ctx.accumulate(terms)]  # weights have the result's shape: every term is full-size


@vjp_rule("Max")
def max_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cotangent goes to the operand(s) equal to the maximum (ties split evenly)."""
    return _extremum_vjp(ctx, node, grads)


@jvp_rule("Max")
def max_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent of the operand(s) equal to the maximum (ties averaged)."""
    return _extremum_jvp(ctx, node, tangents)


@vjp_rule("Min")
def min_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cotangent goes to the operand(s) equal to the minimum (ties split evenly)."""
    return _extremum_vjp(ctx, node, grads)


@jvp_rule("Min")
def min_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The tangent of the operand(s) equal to the minimum (ties averaged)."""
    return _extremum_jvp(ctx, node, tangents)


# ---- Where ----------------------------------------------------------------------------------
@vjp_rule("Where")
def where_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Where(c, a, b): the cotangent goes to a where c holds, to b elsewhere; c gets none."""
    g = ctx.require_gradient(grads[0], node)
    condition, a, b = node.input
    y = node.output[0]
    zero = ctx.scalar(0.0, like=y)
    grad_a = ctx.unbroadcast(ctx.emit("Where", [condition, g, zero]), a, y) if ctx.needs_gradient(a) else None
    grad_b = ctx.unbroadcast(ctx.emit("Where", [condition, zero, g]), b, y) if ctx.needs_gradient(b) else None
    return [None, grad_a, grad_b]


@jvp_rule("Where")
def where_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Where(c, a, b): da where c holds, db elsewhere (zero for an operand without tangent)."""
    _, ta, tb = tangents
    condition, a, b = node.input
    y = node.output[0]
    zero = ctx.scalar(0.0, like=y)
    lifted_a = ctx.lift(ta, a, y) if ta is not None else zero
    lifted_b = ctx.lift(tb, b, y) if tb is not None else zero
    return [ctx.expand_lead(ctx.emit("Where", [condition, lifted_a, lifted_b]), y)]


# ---- identities and casts -------------------------------------------------------------------
@vjp_rule("Identity")
def identity_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The identity passes the cotangent through."""
    return [grads[0]]


@jvp_rule("Identity")
def identity_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """The identity passes the tangent through."""
    return [tangents[0]]


@vjp_rule("Dropout")
def dropout_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Inference-mode Dropout is the identity (the mask output carries no gradient)."""
    return [grads[0]]


@jvp_rule("Dropout")
def dropout_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Inference-mode Dropout is the identity: the tangent passes through."""
    return [tangents[0]]


@vjp_rule("Cast")
def cast_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """A float-to-float cast: cast the cotangent back (casts to integers are off the path)."""
    return [ctx.emit("Cast", [ctx.require_gradient(grads[0], node)], to=ctx.elem_type(node.input[0]))]


@jvp_rule("Cast")
def cast_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """A float-to-float cast: the tangent cast to the output's type."""
    return [ctx.emit("Cast", [ctx.require_gradient(tangents[0], node)], to=ctx.elem_type(node.output[0]))]


@vjp_rule("CastLike")
def castlike_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """CastLike(a, target) between float types: cast the cotangent back to a's type."""
    return [ctx.emit("Cast", [ctx.require_gradient(grads[0], node)], to=ctx.elem_type(node.input[0])), None]


@jvp_rule("CastLike")
def castlike_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """CastLike between float types: the tangent cast to the output's type."""
    if tangents[0] is None:
        return [None]
    return [ctx.emit("Cast", [tangents[0]], to=ctx.elem_type(node.output[0]))]

