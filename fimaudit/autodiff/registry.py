"""The gradient-rule registry: one named VJP (and JVP) function per ONNX op, and explicit markers.

Why a registry and not a big ``if op_type == ...``: every rule is a small, typed, documented
function next to its twin, testable on its own, and the preflight check (``builder.missing_rules``)
can name every uncovered op before any compute.

How to write a rule (the contract; read with ``fimaudit/autodiff/context.py``)
------------------------------------------------------------------------------
Every tensor on the *differentiable path* (it depends on the chosen input through float tensors)
has a cotangent (reverse mode) or tangent (forward mode) with ONE EXTRA LEADING AXIS of size M in
front of the forward tensor's own shape: forward ``t`` of shape ``s`` -> ``dt`` of shape ``[M, *s]``.
Forward values broadcast against these by numpy's right-aligned rules, so ``Mul(g, w)`` with a
forward ``w`` needs no change; a non-negative axis ``a`` of the forward op becomes ``a + 1``
(``ctx.shift_axis``), a negative axis stays as it is.

VJP rule::

    @vjp_rule("Tanh")
    def tanh_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
        ...

- ``grads[i]`` is the cotangent name of ``node.output[i]`` (shape ``[M, *shape(output i)]``), or
  ``None`` when that output carries no cotangent (not used on the way to the logits, or an integer
  output). At least one entry is not None. Use ``ctx.zeros_lead_like(node.output[i])`` if you need
  an explicit zero for a ``None`` entry of a multi-output op.
- Return a list aligned with ``node.input``: the cotangent name of each input (shape
  ``[M, *shape(input)]``), or ``None``. Return a value ONLY for inputs where
  ``ctx.needs_gradient(node.input[j])`` is True (weights, shapes, indices and other constants get
  ``None``: fimaudit never builds weight gradients). Trailing ``None`` entries may be omitted.
- Forward tensors (``node.input``/``node.output``) may be used directly: the gradient model
  contains the whole forward graph.
- Emit nodes only through ``ctx`` (``ctx.emit``, ``ctx.constant``, ``ctx.ints``, helpers); never
  append to the graph yourself. Emitted nodes must be valid at ``ctx.opset`` (use the helpers
  ``ctx.squeeze``, ``ctx.unsqueeze``, ``ctx.reduce``, ``ctx.slice``, which pick the opset's form).
- Undo broadcasting with the ONE shared helper ``ctx.unbroadcast(cotangent, operand, result)``.

JVP rule (forward mode, the twin)::

    @jvp_rule("Tanh")
    def tanh_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
        ...

- ``tangents[j]`` is the tangent of ``node.input[j]`` (shape ``[M, *shape(input j)]``) or ``None``
  when that input is not on the differentiable path (its tangent is zero). At least one is not None.
- Return a list aligned with ``node.output``: the tangent of each float output that depends on a
  tangent input, else ``None`` (integer outputs such as TopK indices). Trailing ``None`` may be
  omitted.

Unary elementwise ops may instead register the pointwise derivative once:
``@pointwise_rule("Tanh")`` on ``def tanh_derivative(ctx, node) -> str`` (the name of a forward
tensor holding f'(x)); both the VJP and the JVP are then the product with it.

Markers
-------
- ``zero_gradient("Shape", "Floor", ...)``: the op's outputs never carry a gradient (shape
  arithmetic, piecewise-constant functions). The builder treats their outputs as off the path.
- ``not_differentiable("QLinearConv", ...)``: the op cannot be differentiated (quantized integer
  arithmetic). If such a node depends on the input and feeds the logits, preflight reports it.

An op with neither a rule nor a marker on the differentiable path makes the builder raise
``fimaudit.errors.UnsupportedOpError`` naming the op, the node and the supported ops.

Registration happens at import time of the rule modules, which ``load_rules()`` imports (the
list lives in ``fimaudit/autodiff/rules/__init__.py``: add your family module there).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, TypeVar

import onnx

from fimaudit.errors import FimauditError

if TYPE_CHECKING:  # pragma: no cover
    from fimaudit.autodiff.context import RuleContext

VjpRule = Callable[["RuleContext", onnx.NodeProto, Sequence["str | None"]], Sequence["str | None"]]
JvpRule = Callable[["RuleContext", onnx.NodeProto, Sequence["str | None"]], Sequence["str | None"]]
Rule = TypeVar("Rule", bound=Callable[..., Sequence["str | None"]])

OpKey = tuple[str, str]  # (domain, op_type); the default ONNX domain is ""

_VJP: dict[OpKey, VjpRule] = {}
_JVP: dict[OpKey, JvpRule] = {}
_ZERO: set[OpKey] = set()
_NOT_DIFFERENTIABLE: set[OpKey] = set()


class RegistryError(FimauditError):
    """A rule was registered twice, or an op was both given a rule and a marker (a bug)."""


def op_key(op_type: str, domain: str = "") -> OpKey:
    """Registry key of an op; 'ai.onnx' and '' both mean the default ONNX domain."""
    return ("" if domain in ("", "ai.onnx") else domain, op_type)


def _check_free(key: OpKey, table: Collection[OpKey], what: str) -> None:
    if key in table:
        raise RegistryError(f"{what} for {_display(key)} is registered twice")
    if table is not _ZERO and table is not _NOT_DIFFERENTIABLE and (key in _ZERO or key in _NOT_DIFFERENTIABLE):
        raise RegistryError(f"{_display(key)} has a marker and a rule")


def vjp_rule(op_type: str, domain: str = "") -> Callable[[Rule], Rule]:
    """Register the decorated function as the reverse-mode rule of ``op_type``."""
    key = op_key(op_type, domain)

    def register(function: Rule) -> Rule:
        _check_free(key, _VJP, "a VJP rule")
        _VJP[key] = function
        return function

    return register


def jvp_rule(op_type: str, domain: str = "") -> Callable[[Rule], Rule]:
    """Register the decorated function as the forward-mode rule of ``op_type``."""
    key = op_key(op_type, domain)

    def register(function: Rule) -> Rule:
        _check_free(key, _JVP, "a JVP rule")
        _JVP[key] = function
        return function

    return register


Derivative = Callable[["RuleContext", onnx.NodeProto], str]


def pointwise_rule(op_type: str, domain: str = "") -> Callable[[Derivative], Derivative]:
    """Register both rules of a unary elementwise op y = f(x) from its pointwise derivative.

    The decorated function returns the name of a *forward* tensor holding f'(x) (shape of x);
    the VJP is ``g * f'(x)`` and the JVP ``t * f'(x)`` (the derivative is diagonal, so the
    two rules are the same product). Use it for the op's first input only.
    """

    def register(derivative: Derivative) -> Derivative:
        def vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
            return [ctx.emit("Mul", [ctx.require_gradient(grads[0], node), derivative(ctx, node)])]

        def jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
            return [ctx.emit("Mul", [ctx.require_gradient(tangents[0], node), derivative(ctx, node)])]

        for rule, kind in ((vjp, "vjp"), (jvp, "jvp")):
            rule.__name__ = rule.__qualname__ = f"{derivative.__name__}_{kind}"
            rule.__doc__ = f"{op_type}: the gradient times the pointwise derivative ({derivative.__name__})."
            rule.__module__ = derivative.__module__
        vjp_rule(op_type, domain)(vjp)
        jvp_rule(op_type, domain)(jvp)
        return derivative

    return register


def zero_gradient(*op_types: str, domain: str = "") -> None:
    """Mark ops whose outputs carry no gradient (shape arithmetic, piecewise-constant maps)."""
    for op_type in op_types:
        key = op_key(op_type, domain)
        if key in _VJP or key in _JVP or key in _NOT_DIFFERENTIABLE:
            raise RegistryError(f"{_display(key)} cannot be zero-gradient: it has a rule or marker")
        _ZERO.add(key)


def not_differentiable(*op_types: str, domain: str = "") -> None:
    """Mark ops that cannot be differentiated (quantized integer arithmetic, ...)."""
    for op_type in op_types:
        key = op_key(op_type, domain)
        if key in _VJP or key in _JVP or key in _ZERO:
            raise RegistryError(f"{_display(key)} cannot be not-differentiable: it has a rule or marker")
        _NOT_DIFFERENTIABLE.add(key)


def _display(key: OpKey) -> str:
    domain, op_type = key
    return f"{domain}::{op_type}" if domain else op_type


def load_rules() -> None:
    """Import every rule family once (registration happens at import)."""
    import fimaudit.autodiff.rules  # noqa: F401  (imports its family modules)


def get_vjp(op_type: str, domain: str = "") -> VjpRule | None:
    """The reverse-mode rule of ``op_type`` (None when it has none)."""
    load_rules()
    return _VJP.get(op_key(op_type, domain))


def get_jvp(op_type: str, domain: str = "") -> JvpRule | None:
    """The forward-mode rule of ``op_type`` (None when it has none)."""
    load_rules()
    return _JVP.get(op_key(op_type, domain))


def is_zero_gradient(op_type: str, domain: str = "") -> bool:
    """True when ``op_type`` is marked as never carrying a gradient."""
    load_rules()
    return op_key(op_type, domain) in _ZERO


def is_not_differentiable(op_type: str, domain: str = "") -> bool:
    """True when ``op_type`` is marked as not differentiable."""
    load_rules()
    return op_key(op_type, domain) in _NOT_DIFFERENTIABLE


def vjp_ops() -> list[str]:
    """Ops with a reverse-mode rule, by display name (sorted)."""
    load_rules()
    return sorted(_display(key) for key in _VJP)


def jvp_ops() -> list[str]:
    """Ops with a forward-mode rule, by display name (sorted)."""
    load_rules()
    return sorted(_display(key) for key in _JVP)
