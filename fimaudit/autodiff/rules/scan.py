"""Gradient rules of CumSum and Einsum (linear in each operand).

CumSum along ``axis`` (a constant input): the JVP is the same CumSum of the tangent (axis shifted
past the lead axis); the VJP is the CumSum in the opposite direction with the same ``exclusive``:
x_j reaches y_i for i >= j (inclusive) or i > j (exclusive), so g_x[j] = sum of g over those i.

Einsum: the JVP is the sum over differentiable operands of the equation with operand i replaced by
its tangent (the lead axis a fresh letter). The VJP of operand i is an Einsum of the cotangent with
the other operands producing operand i's letters; letters that occur only in operand i (summed
away by the forward op) get the cotangent broadcast along them (Unsqueeze + Expand). Refused with
UnsupportedOpError: a letter repeated within one operand (diagonal extraction), ellipsis
('...'), and operands that broadcast a size-1 axis against another operand's longer axis.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np
import onnx

from fimaudit.autodiff.context import RuleContext
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import ModelError, UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, int_attribute


# ---- CumSum -----------------------------------------------------------------------------------
def _cumsum_axis(ctx: RuleContext, node: onnx.NodeProto) -> str:
    """The gradient's axis as an int64 tensor (the forward axis must be a constant)."""
    value = ctx.constant_value(node.input[1])
    if value is None:
        raise UnsupportedOpError(
            f"CumSum node {node.name!r}: an axis computed at run time is not supported", ["CumSum"]
        )
    axis = int(np.asarray(value).reshape(-1)[0])
    shifted = np.array(ctx.shift_axis(axis), dtype=np.asarray(value).dtype)
    return ctx.constant(shifted, "axis")


@vjp_rule("CumSum")
def cumsum_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """The cumulative sum of the cotangent in the opposite direction (same ``exclusive``)."""
    reverse = int_attribute(node, "reverse", 0)
    exclusive = int_attribute(node, "exclusive", 0)
    return [
        ctx.emit(
            "CumSum",
            [ctx.require_gradient(grads[0], node), _cumsum_axis(ctx, node)],
            exclusive=exclusive,
            reverse=1 - reverse,
        )
    ]


@jvp_rule("CumSum")
def cumsum_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """CumSum is linear: the same CumSum of the tangent."""
    reverse = int_attribute(node, "reverse", 0)
    exclusive = int_attribute(node, "exclusive", 0)
    return [
        ctx.emit(
            "CumSum",
            [ctx.require_gradient(tangents[0], node), _cumsum_axis(ctx, node)],
            exclusive=exclusive,
            reverse=reverse,
        )
    ]


# ---- Einsum -----------------------------------------------------------------------------------
def _parse(ctx: RuleContext, node: onnx.NodeProto) -> tuple[list[str], str, str]:
    """(operand terms, output term, a free letter for the lead axis); refuses what is unsupported."""
    equation = str(attribute(node, "equation")).replace(" ", "")
    if "..." in equation:
        raise UnsupportedOpError(
            f"Einsum node {node.name!r}: ellipsis ('...') in {equation!r} is not supported", ["Einsum"]
        )
    inputs, _, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(node.input):
        raise ModelError(
            f"Einsum node {node.name!r}: {equation!r} has {len(terms)} operands, the node {len(node.input)}"
        )
    if "->" not in equation:  # implicit output: letters that occur once, in alphabetical order
        letters = "".join(terms)
        output = "".join(sorted(letter for letter in set(letters) if letters.count(letter) == 1))
    for term in terms:
        if len(set(term)) != len(term):
            raise UnsupportedOpError(
                f"Einsum node {node.name!r}: a letter repeated within one operand ({term!r} in {equation!r}, "
                "a diagonal) is not supported",
                ["Einsum"],
            )
    _check_no_broadcast(ctx, node, terms)
    used = set("".join(terms) + output)
    lead = next(letter for letter in string.ascii_letters if letter not in used)
    return terms, output, lead


def _check_no_broadcast(ctx: RuleContext, node: onnx.NodeProto, terms: list[str]) -> None:
    sizes: dict[str, set[object]] = {}
    for name, term in zip(node.input, terms, strict=True):
        shape = ctx.static_shape(name) or [None] * len(term)
        if len(shape) != len(term):
            raise ModelError(f"Einsum node {node.name!r}: operand {name!r} of rank {len(shape)} is labelled {term!r}")
        for letter, dim in zip(term, shape, strict=True):
            sizes.setdefault(letter, set()).add(dim)
    for letter, dims in sizes.items():
        if 1 in dims and len(dims) > 1:
            raise UnsupportedOpError(
                f"Einsum node {node.name!r}: letter {letter!r} broadcasts a size-1 axis; not supported", ["Einsum"]
            )


@vjp_rule("Einsum")
def einsum_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_i = Einsum(lead+out, other operands -> lead+term_i), broadcast along letters only in operand i."""
    terms, output, lead = _parse(ctx, node)
    results: list[str | None] = []
    for index, (name, term) in enumerate(zip(node.input, terms, strict=True)):
        if not ctx.needs_gradient(name):
            results.append(None)
            continue
        others = [(other, t) for j, (other, t) in enumerate(zip(node.input, terms, strict=True)) if j != index]
        elsewhere = set(output + "".join(t for _, t in others))
        kept = "".join(letter for letter in term if letter in elsewhere)
        equation = ",".join([lead + output, *[t for _, t in others]]) + "->" + lead + kept
        pulled = ctx.emit(
            "Einsum", [ctx.require_gradient(grads[0], node), *[other for other, _ in others]], equation=equation
        )
        if kept != term:
            missing = [position + 1 for position, letter in enumerate(term) if letter not in elsewhere]
            pulled = ctx.expand_lead(ctx.unsqueeze(pulled, missing), name)
        results.append(pulled)
    return results


@jvp_rule("Einsum")
def einsum_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Sum over differentiable operands of the equation with that operand's tangent."""
    terms, output, lead = _parse(ctx, node)
    parts = []
    for index, tangent in enumerate(tangents):
        if tangent is None:
            continue
        operands = [tangent if j == index else name for j, name in enumerate(node.input)]
        labelled = [lead + t if j == index else t for j, t in enumerate(terms)]
        parts.append(ctx.emit("Einsum", operands, equation=",".join(labelled) + "->" + lead + output))
    return [ctx.accumulate(parts)]
