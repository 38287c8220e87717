"""Elementwise arithmetic with numpy broadcasting.

Sums (residual connections), scaling, products and quotients, selections.

Sum: d(a + b) = da + db, so L <= L_a + L_b (the residual block's 1 + L_f), each term times
sqrt(copies) when broadcasting copies it. Product with a constant c: the exact norm of
dx -> c * broadcast(dx) (see linalg.broadcast_gain). Product of two activations:
d(ab) = b da + a db — gains from the other factor's values at the sample (local) or from its
magnitude bound (global). Max/Min of two activations: |max(a, b) - max(a', b')| <=
max(|da|, |db|), so the squares add: l2 combination.
"""

from __future__ import annotations

import math

import numpy as np

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.linalg import broadcast_copies, broadcast_gain, certify
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound

LOCAL_NOTE = "local: the other factor's values at this sample"


def _copies_gain(ctx: NodeContext, index: int) -> float:
    copies = broadcast_copies(ctx.shape(index), ctx.output_shape())
    return 1.0 if copies == 1 else certify(math.sqrt(copies))


def _magnitudes(ctx: NodeContext) -> list[float]:
    return [ctx.magnitude(i) for i in range(len(ctx.node.input)) if ctx.has_input(i)]


@layer_bound("Add", "Sub", "Sum")
def sum_bound(ctx: NodeContext) -> LayerGain:
    """Triangle inequality over the input-dependent terms."""
    gains = {index: _copies_gain(ctx, index) for index in ctx.varying_inputs()}
    method = "sum of the terms' constants" if len(gains) > 1 else "adds a constant"
    return LayerGain(gains, method, magnitude=sum(_magnitudes(ctx)))


@layer_bound("Mean")
def mean_bound(ctx: NodeContext) -> LayerGain:
    """Mean of k inputs: each varying term gets sqrt(its broadcast copies) / k."""
    count = len([name for name in ctx.node.input if name])
    gains = {index: _copies_gain(ctx, index) / count for index in ctx.varying_inputs()}
    return LayerGain(gains, f"mean of {count} terms", magnitude=max(_magnitudes(ctx), default=0.0))


def _factor_gain(ctx: NodeContext, index: int, other: int) -> tuple[float, str | None]:
    """Gain of input ``index`` in a product whose other factor is input ``other``."""
    value = ctx.value(other) if (ctx.local or not ctx.varying(other)) else None
    in_shape, out_shape = ctx.shape(index), ctx.output_shape()
    if value is not None:
        note = LOCAL_NOTE if ctx.varying(other) else None
        return broadcast_gain(np.abs(np.asarray(value, dtype=np.float64)), in_shape, out_shape), note
    if not ctx.varying(other):
        raise BoundUnavailable(
            f"{ctx.node.op_type} node {ctx.name!r}: the factor {ctx.input_name(other)!r} is neither a constant nor "
            "input-dependent (an unknown extra input?)"
        )
    magnitude = ctx.magnitude(other)
    if not math.isfinite(magnitude):
        raise BoundUnavailable(
            f"{ctx.node.op_type} node {ctx.name!r} multiplies two input-dependent tensors whose size is not bounded "
            "for all inputs (a global bound needs a bounded input domain)"
        )
    gain = certify(magnitude * math.sqrt(broadcast_copies(in_shape, out_shape)))
    return gain, "global: activation magnitude bounded upstream"


def _two_factors(ctx: NodeContext) -> bool:
    return len(ctx.varying_inputs()) == 2


def _divisor_varies(ctx: NodeContext) -> bool:
    return ctx.varying(1)


@layer_bound("Mul", local=_two_factors)
def mul_bound(ctx: NodeContext) -> LayerGain:
    """Scaling by a constant (exact), or the product rule for two activations."""
    varying = ctx.varying_inputs()
    gains: dict[int, float] = {}
    notes = set()
    for index in varying:
        other = 1 - index
        gain, note = _factor_gain(ctx, index, other)
        gains[index] = gain
        if note:
            notes.add(note)
    magnitude = ctx.magnitude(0) * ctx.magnitude(1)
    method = "product with a constant" if len(varying) == 1 else "product rule: other factor's size"
    return LayerGain(gains, method, magnitude=magnitude, assumption="; ".join(sorted(notes)) or None)


@layer_bound("Div", local=_divisor_varies)
def div_bound(ctx: NodeContext) -> LayerGain:
    """A / c with a fixed divisor: exact; an input-dependent divisor: at the sample only.

    There d(a / b) = da / b - a db / b^2.
    """
    varying = ctx.varying_inputs()
    divisor = ctx.value(1) if (ctx.local or not ctx.varying(1)) else None
    if divisor is None:
        reason = (
            "the divisor is not a known constant"
            if not ctx.varying(1)
            else "an input-dependent divisor has no global Lipschitz constant"
        )
        raise BoundUnavailable(f"Div node {ctx.name!r}: {reason}")
    b = np.asarray(divisor, dtype=np.float64)
    if np.any(b == 0):
        raise BoundUnavailable(f"Div node {ctx.name!r}: the divisor is 0")
    gains: dict[int, float] = {}
    if 0 in varying:
        gains[0] = broadcast_gain(1.0 / np.abs(b), ctx.shape(0), ctx.output_shape())
    if 1 in varying:
        numerator = ctx.value(0)
        if numerator is None:
            raise BoundUnavailable(f"Div node {ctx.name!r}: the numerator is unknown")
        gains[1] = broadcast_gain(
            np.abs(np.asarray(numerator, dtype=np.float64)) / (b * b), ctx.shape(1), ctx.output_shape()
        )
    magnitude = ctx.magnitude(0) / float(np.abs(b).min()) if not ctx.varying(1) else math.inf
    assumption = LOCAL_NOTE if ctx.varying(1) else None
    return LayerGain(
        gains,
        "quotient rule" if ctx.varying(1) else "division by a constant",
        magnitude=magnitude,
        assumption=assumption,
    )


@layer_bound("Max", "Min")
def max_min_bound(ctx: NodeContext) -> LayerGain:
    """|max(a, b) - max(a', b')| <= max(|da|, |db|): l2 combination (constants drop out)."""
    gains = {index: _copies_gain(ctx, index) for index in ctx.varying_inputs()}
    return LayerGain(gains, "pointwise max/min", combine="l2", magnitude=max(_magnitudes(ctx), default=0.0))


@layer_bound("Where")
def where_bound(ctx: NodeContext) -> LayerGain:
    """A fixed selection between two tensors (the condition must not depend on the input)."""
    if ctx.varying(0):
        raise BoundUnavailable(f"Where node {ctx.name!r}: an input-dependent condition makes a discontinuous selection")
    gains = {index: _copies_gain(ctx, index) for index in ctx.varying_inputs()}
    return LayerGain(gains, "fixed selection", combine="l2", magnitude=max(ctx.magnitude(1), ctx.magnitude(2)))
