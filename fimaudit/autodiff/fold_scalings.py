"""Fold chains of scalings in a gradient graph, so that the forward half computes their product once.

Why: most gradient rules scale the incoming gradient by a forward tensor (ReLU's 0/1 mask, a
MaxPool's winner mask, BatchNormalization's per-channel factor, the pointwise derivative of each
step of a decomposed activation). Emitted rule by rule, a chain of such ops costs one Mul over
the gradient, with its M rows, per step, on every product. The product of the factors depends on
the forward values only: computed once, in the forward half (``kept_forward.py`` puts every
node that does not depend on the seed there), it leaves one Mul per chain in the gradient half.

Rewrites (``g`` depends on the seed, ``a``, ``b`` do not; the inner node has no other reader):

- ``Mul(Mul(g, a), b)`` -> ``Mul(g, Mul(a, b))``; with ``Div(g, a)`` or ``Neg(g)`` inside, and
  ``Div(., b)`` or ``Neg(.)`` outside, the same with the factor divided or negated;
- ``Add(Mul(g, a), Mul(g, b))`` -> ``Mul(g, Add(a, b))`` (and Sub): the two paths of a product
  rule that meet again, as in a GELU decomposed into Div, Erf, Add and Mul (TorchScript's
  export), which then folds to one Mul.

Exact in real arithmetic (elementwise products under numpy broadcasting are associative and
distribute over Add): the gradient changes by rounding only, as any reordering of a product of
floats. Applied to fixpoint, dropping the nodes left without readers after each pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import helper

from fimaudit.graph.tensors import drop_unread

#: Broadcasting Mul/Div/Add/Sub without the ``broadcast`` attribute: opset 7 on.
MIN_OPSET = 7


@dataclass(frozen=True)
class _Scaling:
    """A tensor ``g op factor`` made by a single-reader node: op is "mul", "div" or "neg"."""

    gradient: str
    factor: str | None
    kind: str


def fold_scalings(nodes: list[onnx.NodeProto], seed: str, keep: set[str], fresh: Callable[[str], str]) -> int:
    """Rewrite ``nodes`` (the emitted gradient nodes, in order) in place; return the folds made.

    ``keep``: tensors read outside ``nodes`` (the graph's outputs); ``fresh``: unique names.
    """
    folds = 0
    while True:
        made = _one_pass(nodes, seed, keep, fresh)
        if not made:
            return folds
        folds += made
        drop_unread(nodes, keep)  # the folded-away nodes' reads would block the next fold


def _one_pass(nodes: list[onnx.NodeProto], seed: str, keep: set[str], fresh: Callable[[str], str]) -> int:
    on_seed = {seed}
    for node in nodes:
        if any(name in on_seed for name in node.input):
            on_seed.update(node.output)
    readers = Counter(name for node in nodes for name in node.input)
    readers.update(keep)
    producer = {node.output[0]: node for node in nodes if len(node.output) == 1}

    def scaling(name: str) -> _Scaling | None:
        node = producer.get(name)
        if node is None or readers[name] != 1:  # one reader: the node folding it, once
            return None
        if node.op_type == "Neg":
            return _Scaling(node.input[0], None, "neg")
        if len(node.input) != 2:
            return None
        left, right = (name in on_seed for name in node.input)
        if node.op_type == "Mul" and left != right:
            gradient, factor = node.input if left else reversed(node.input)
            return _Scaling(gradient, factor, "mul")
        if node.op_type == "Div" and left and not right:
            return _Scaling(node.input[0], node.input[1], "div")
        return None

    made = 0
    rewritten: list[onnx.NodeProto] = []
    for node in nodes:
        replacement = _fold(node, on_seed, scaling, fresh)
        if replacement is None:
            rewritten.append(node)
            continue
        extra, folded = replacement
        rewritten.extend(extra)
        rewritten.append(folded)
        producer[folded.output[0]] = folded  # a later node folds into the new form in this pass
        made += 1
    nodes[:] = rewritten
    return made


def _fold(
    node: onnx.NodeProto, on_seed: set[str], scaling: Callable[[str], _Scaling | None], fresh: Callable[[str], str]
) -> tuple[list[onnx.NodeProto], onnx.NodeProto] | None:
    """(new factor nodes, the node's replacement), or None when nothing folds."""
    op = node.op_type
    extra: list[onnx.NodeProto] = []

    def make(op_type: str, inputs: list[str]) -> str:
        out = fresh(f"fold_{op_type.lower()}")
        extra.append(helper.make_node(op_type, inputs, [out], name=fresh("node_fold")))
        return out

    def replaced(op_type: str, inputs: list[str]) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, list(node.output), name=node.name)

    if op in ("Mul", "Div") and len(node.input) == 2:
        left, right = (name in on_seed for name in node.input)
        if left == right or (op == "Div" and not left):
            return None
        inner, outer = node.input if left else reversed(node.input)
        found = scaling(inner)
        if found is None:
            return None
        g, a = found.gradient, found.factor
        if op == "Mul":
            if found.kind == "mul":
                return extra, replaced("Mul", [g, make("Mul", [a, outer])])  # type: ignore[list-item]
            if found.kind == "div":
                return extra, replaced("Mul", [g, make("Div", [outer, a])])  # type: ignore[list-item]
            return extra, replaced("Mul", [g, make("Neg", [outer])])
        # Div(scaled g, outer)
        if found.kind == "mul":
            return extra, replaced("Mul", [g, make("Div", [a, outer])])  # type: ignore[list-item]
        if found.kind == "div":
            return extra, replaced("Div", [g, make("Mul", [a, outer])])  # type: ignore[list-item]
        return extra, replaced("Div", [g, make("Neg", [outer])])
    if op == "Neg" and node.input[0] in on_seed:
        found = scaling(node.input[0])
        if found is None or found.kind == "neg":
            return None
        negated = make("Neg", [found.factor])  # type: ignore[list-item]
        return extra, replaced("Mul" if found.kind == "mul" else "Div", [found.gradient, negated])
    if op in ("Add", "Sub") and len(node.input) == 2 and all(name in on_seed for name in node.input):
        first, second = scaling(node.input[0]), scaling(node.input[1])
        if first is None or second is None or first.kind != "mul" or second.kind != "mul":
            return None
        if first.gradient != second.gradient or node.input[0] == node.input[1]:
            return None
        combined = make(op, [first.factor, second.factor])  # type: ignore[list-item]
        return extra, replaced("Mul", [first.gradient, combined])
    return None
