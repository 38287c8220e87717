"""The bound-rule registry: one named function per ONNX op giving a certified Lipschitz gain.

Why a registry (as for the gradient rules): every op's bound is a small documented function
beside its proof sketch, testable on its own against the op's true operator norm, and an op
without a rule is named in the result instead of being skipped (skipping would silently
underestimate the bound).

How to write a rule
-------------------
::

    @layer_bound("Relu")
    def relu_bound(ctx: NodeContext) -> LayerGain:
        return LayerGain({0: 1.0}, method="ReLU is 1-Lipschitz", magnitude=ctx.magnitude(0))

- A rule returns, for every input that depends on the audited input (``ctx.varying_inputs()``),
  a gain g_i such that, with L_i the Lipschitz constant (l2 -> l2) of x -> input_i,
  the output's constant is  sum_i g_i L_i  (``combine="sum"``: the triangle inequality) or
  sqrt(sum_i (g_i L_i)^2)  (``combine="l2"``: the inputs land in disjoint output entries, Concat).
- Gains are certified upper bounds in exact arithmetic on the model's (float32) weights: an
  estimate (power iteration, sampling) is never a gain. Spectral norms computed in floating point
  get the relative safety margin of ``fimaudit.bounds.linalg``.
- ``ctx.mode`` is "global" (valid for every input) or "local" (valid at this sample: the gain
  bounds the norm of the op's Jacobian at the activations in ``ctx.value(i)``). Rules that read
  activations are registered with ``local=True`` (or a predicate saying for which nodes they do)
  so the probe run records the values they read; they must fall back to the global gain when a
  value is missing. The walk never uses a local gain above the global one.
- ``magnitude`` is a bound on max |output| over the whole input domain (global mode), used by
  the rules of products of two activations; ``math.inf`` when unknown.
- A rule that cannot bound this node raises ``BoundUnavailable`` with a one-line reason (for
  example: a product of two activations with no bound on their size). The composed bound is
  then null, and the result says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fimaudit.errors import FimauditError

if TYPE_CHECKING:  # pragma: no cover
    from fimaudit.bounds.context import NodeContext

COMBINES = ("sum", "l2")


class BoundUnavailable(FimauditError):
    """A rule cannot give a finite certified gain for this node (the reason says why)."""


@dataclass(frozen=True)
class LayerGain:
    """What one node does to the Lipschitz constant (see the module docstring)."""

    gains: dict[int, float]
    method: str
    combine: str = "sum"
    magnitude: float = math.inf
    assumption: str | None = None
    details: dict[str, float] = field(default_factory=dict)
    # Which outputs the gain covers (None: all; LayerNorm's Mean/InvStdDev outputs are other maps).
    outputs: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; expected one of {COMBINES}")
        for index, gain in self.gains.items():
            if not gain >= 0.0:  # also rejects NaN
                raise ValueError(f"gain of input {index} must be >= 0, got {gain}")


BoundRule = Callable[["NodeContext"], LayerGain]
LocalWhen = Callable[["NodeContext"], bool]

_RULES: dict[str, BoundRule] = {}
_LOCAL: dict[str, LocalWhen] = {}


def _always(_ctx: NodeContext) -> bool:
    return True


def layer_bound(*op_types: str, local: bool | LocalWhen = False) -> Callable[[BoundRule], BoundRule]:
    """Register ``function`` as the bound rule of ``op_types``.

    ``local=True``: the rule reads the sample's activations in local mode (``ctx.value``);
    a predicate instead says for which nodes it does (a product of two activations does, a
    layer with constant weights does not: its gain is computed once, not per sample).
    """

    def register(function: BoundRule) -> BoundRule:
        for op_type in op_types:
            if op_type in _RULES:
                raise ValueError(f"a bound rule for {op_type} is already registered ({_RULES[op_type].__name__})")
            _RULES[op_type] = function
            if local:
                _LOCAL[op_type] = _always if local is True else local
        return function

    return register


def get_rule(op_type: str) -> BoundRule | None:
    """The rule registered for ``op_type``, or None."""
    load_rules()
    return _RULES.get(op_type)


def reads_values(ctx: NodeContext) -> bool:
    """True when the node's rule uses the sample's activations in local mode."""
    load_rules()
    when = _LOCAL.get(ctx.node.op_type)
    return when is not None and when(ctx)


def supported_ops() -> list[str]:
    """Every op type with a bound rule, sorted."""
    load_rules()
    return sorted(_RULES)


def load_rules() -> None:
    """Import the rule modules (registration happens at import)."""
    from fimaudit.bounds import rules  # noqa: F401  (imports every family module)
