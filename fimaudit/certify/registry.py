"""The certification-rule registry: one class per ONNX op, forward (ranges) and backward (Jacobian rows).

Why a registry (as for the gradient and bound rules): each op's interval rule is a small
documented class beside its argument, testable on its own against dense sampling, and an op
without a rule stops the certificate with ``NotCertified`` naming the op and the node, instead of
being skipped (skipping would certify a different function).

How to write a rule
-------------------
::

    @certify_rule("Relu")
    class ReluRule(PointwiseRule): ...

- ``forward(ctx)`` returns one ``Box`` per output: the value at x and a range valid for every
  point of the set. It may keep what the backward pass needs in ``ctx.state``.
- ``backward(ctx, out)`` receives the output's ``Cotangent`` (K rows, centre and radius) and
  returns one per varying input: the centre is the chain rule at x; the radius covers every
  Jacobian the op can have over the set (slope ranges from the forward boxes).
- Constants are read with ``ctx.const(i)``; a rule that cannot certify this node (a varying
  weight, an attribute it does not handle) raises ``NotCertified`` with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnx

from fimaudit.certify.intervals import Box, Cotangent
from fimaudit.errors import FimauditError
from fimaudit.graph import onnx_utils
from fimaudit.graph.view import GraphView


class NotCertified(FimauditError):
    """The model (or this node of it) has no certified rule: no certificate, and the reason why."""


@dataclass
class NodeContext:
    """What a rule sees of one node: the node, its inputs' boxes (None for constants), the view."""

    node: onnx.NodeProto
    view: GraphView
    boxes: list[Box | None]
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The node's name, as the exporter wrote it (for messages)."""
        return self.node.name or self.node.op_type

    def refuse(self, reason: str) -> NotCertified:
        """The error a rule raises when it cannot certify this node."""
        return NotCertified(f"not certified: op {self.node.op_type} at node {self.name!r}: {reason}")

    def box(self, index: int) -> Box:
        """The box of varying input ``index`` (refuses when that input is a constant)."""
        box = self.boxes[index] if index < len(self.boxes) else None
        if box is None:
            raise self.refuse(f"input {index} was expected to depend on the input")
        return box

    def varying(self) -> list[int]:
        """Indices of the inputs that depend on the audited input."""
        return [i for i, box in enumerate(self.boxes) if box is not None]

    def const(self, index: int) -> np.ndarray | None:
        """Input ``index`` as a float64 constant, or None when absent or varying."""
        if index >= len(self.node.input) or not self.node.input[index] or self.boxes[index] is not None:
            return None
        value = self.view.const(self.node.input[index])
        if value is None:
            raise self.refuse(f"input {index} ({self.node.input[index]!r}) is neither constant nor input-dependent")
        return np.asarray(value)

    def weight(self, index: int) -> np.ndarray:
        """A required constant input as float64 (refuses when it varies or is missing)."""
        value = self.const(index) if index < len(self.boxes) and self.boxes[index] is None else None
        if value is None:
            raise self.refuse(f"input {index} must be a constant (a product of two activations is not handled here)")
        return np.asarray(value, dtype=np.float64)

    def attr_int(self, name: str, default: int) -> int:
        """An INT attribute (typed reader of the ONNX layer)."""
        return onnx_utils.int_attribute(self.node, name, default)

    def attr_float(self, name: str, default: float) -> float:
        """A FLOAT attribute."""
        return onnx_utils.float_attribute(self.node, name, default)

    def attr_ints(self, name: str) -> list[int] | None:
        """An INTS attribute, or None."""
        return onnx_utils.ints_attribute(self.node, name, None)

    def attr_str(self, name: str, default: str) -> str:
        """A STRING attribute."""
        return onnx_utils.str_attribute(self.node, name, default)


class CertifyRule:
    """Base of every rule: the two passes (see the module docstring)."""

    def forward(self, ctx: NodeContext) -> list[Box]:
        """One box per output."""
        raise NotImplementedError

    def backward(self, ctx: NodeContext, out: Cotangent) -> dict[int, Cotangent]:
        """The cotangent of every varying input, from the (first) output's cotangent."""
        raise NotImplementedError

    def spreads(self, ctx: NodeContext) -> list[tuple[int, np.ndarray]] | None:
        """For a node whose Jacobian is diagonal in each input: (input, max |slope(x') - slope(x)|) pairs.

        [] for an affine op (its Jacobian never changes); None when the node's Jacobian changes in a
        way this form does not describe (telescoping.py then falls back to the interval radius).
        """
        return []

    def tangent(self, ctx: NodeContext, ins: list[Cotangent | None]) -> Cotangent:
        """Forward mode: the output's d rows of d(output)/d(input entry) from the inputs' (None: constant).

        Same centre-radius form as ``backward``, with the stack axis running over the d input entries.
        """
        raise NotImplementedError

    def remainders(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray] | None:
        """Per output entry, [low, high] of output(x') - output(x) - (its Jacobian at x)(inputs' moves).

        None where the rule gives none (symbols.py then uses eps times its gradient bound).
        """
        return None

    def relaxation(self, ctx: NodeContext) -> Relaxation | None:
        """Linear bounds on the remainder as a function of the input, for back-substitution.

        None (the default): the remainder is only known to lie in ``remainders``' interval.
        substitution.py uses a relaxation to bound later tensors with the remainders' dependence on
        the input kept, instead of each remainder's worst case taken independently.
        """
        return None

    def linear(self, ctx: NodeContext, ins: list[np.ndarray | None]) -> np.ndarray:
        """Forward mode at x alone: the local Jacobian at x applied to stacks of directions.

        No set, hence no radius (symbols.py); the default runs ``tangent`` with every slope at x
        and zero radii, rules on the hot path override it with the bare map.
        """
        with slopes_at_x([ctx]):
            rows = [None if stack is None else Cotangent(stack, np.zeros_like(stack)) for stack in ins]
            return self.tangent(ctx, rows).centre


@dataclass(frozen=True)
class Relaxation:
    """Per entry, lines in the input value z with lower(z) <= r(z) <= upper(z) over the input's box.

    r(z) = f(z) - f(z0) - f'(z0) (z - z0) is the entry's remainder against its linearisation at x
    (z0 the value at x); ``upper = upper_slope * z + upper_intercept``, likewise ``lower``.
    """

    upper_slope: np.ndarray
    upper_intercept: np.ndarray
    lower_slope: np.ndarray
    lower_intercept: np.ndarray


@dataclass(frozen=True)
class Selection:
    """Where a selecting node (max pooling) can change its pick over the set."""

    #: Output entries whose arg-max can change.
    outputs: np.ndarray
    #: Input entries such an output can pick.
    candidates: np.ndarray
    #: The most windows one input entry lies in.
    overlap: int


@dataclass(frozen=True)
class Moves:
    """How a node's local Jacobian can move over the set: the one reading every pass uses.

    ``diagonal``: per varying input whose slope can move, the largest |slope(x') - slope(x)| per
    entry (an activation, one factor of a product); ``selection``: a node that picks among its
    inputs. Neither: the Jacobian never changes (an affine op).
    """

    diagonal: list[tuple[int, np.ndarray]]
    selection: Selection | None = None

    @property
    def fixed(self) -> bool:
        """True for a node whose Jacobian is the same at every point of the set."""
        return not self.diagonal and self.selection is None


def moves_of(rule: CertifyRule, ctx: NodeContext) -> Moves | None:
    """The rule's ``spreads``, else its ``changing`` selection; None when it gives neither form.

    None sends the passes to their general fallback (the interval radius, or no symbol form).
    """
    spreads = rule.spreads(ctx)
    if spreads is not None:
        return Moves(list(spreads))
    changing = getattr(rule, "changing", None)
    if changing is None:
        return None
    outputs, candidates, overlap = changing(ctx)
    return Moves([], Selection(outputs, candidates, overlap))


@contextlib.contextmanager
def slopes_at_x(contexts: list[NodeContext]) -> Iterator[None]:
    """Within: every node's rules use its local Jacobian at x (``centre_only``), not its range over the set.

    Restores what each context said before (the passes nest: a default ``linear`` inside a pass at x).
    """
    previous = [ctx.state.get("centre_only") for ctx in contexts]
    for ctx in contexts:
        ctx.state["centre_only"] = True
    try:
        yield
    finally:
        for ctx, value in zip(contexts, previous, strict=True):
            if value is None:
                ctx.state.pop("centre_only", None)
            else:
                ctx.state["centre_only"] = value


R = TypeVar("R", bound=type[CertifyRule])
_RULES: dict[str, CertifyRule] = {}


def certify_rule(*op_types: str) -> Callable[[R], R]:
    """Register the decorated rule class for ``op_types`` (one instance, shared)."""

    def register(cls: R) -> R:
        instance = cls()
        for op_type in op_types:
            if op_type in _RULES:
                existing = type(_RULES[op_type]).__name__
                raise ValueError(f"a certify rule for {op_type} is already registered ({existing})")
            _RULES[op_type] = instance
        return cls

    return register


def get_rule(op_type: str) -> CertifyRule | None:
    """The rule registered for ``op_type``, or None."""
    load_rules()
    return _RULES.get(op_type)


def supported_ops() -> list[str]:
    """Every op type with a certify rule, sorted."""
    load_rules()
    return sorted(_RULES)


def load_rules() -> None:
    """Import the rule modules (registration happens at import)."""
    from fimaudit.certify import rules  # noqa: F401
