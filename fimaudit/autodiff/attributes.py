"""Typed reads of ONNX node attributes for the gradient rules and the lowerings.

``fimaudit.graph.onnx_utils.attribute`` returns ``object``: an attribute may hold any of ONNX's
types. A rule knows the type its op's schema gives each attribute; these helpers state it (so the
type checker follows the value) and refuse an attribute of another type with a ``ModelError``
naming the node, instead of a ``TypeError`` from ``int(...)`` deep inside a rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from fimaudit.errors import ModelError
from fimaudit.graph.onnx_utils import attribute

_NUMBER = (int, float, np.integer, np.floating)


def _refuse(node: onnx.NodeProto, name: str, value: object, expected: str) -> ModelError:
    return ModelError(f"{node.op_type} node {node.name!r}: attribute {name!r} is {value!r}, not {expected}")


def int_attribute(node: onnx.NodeProto, name: str, default: int | None = None) -> int:
    """The integer attribute ``name`` of ``node`` (``default`` when absent; required when None)."""
    value = attribute(node, name, default)
    if not isinstance(value, _NUMBER):
        raise _refuse(node, name, value, "an integer")
    return int(value)


def float_attribute(node: onnx.NodeProto, name: str, default: float | None = None) -> float:
    """The float attribute ``name`` of ``node`` (``default`` when absent; required when None)."""
    value = attribute(node, name, default)
    if not isinstance(value, _NUMBER):
        raise _refuse(node, name, value, "a number")
    return float(value)


def ints_attribute(
    node: onnx.NodeProto, name: str, default: Sequence[int] | range | None = None, *, length: int | None = None
) -> list[int]:
    """The integer-list attribute ``name`` of ``node`` (``default`` when absent; required when None).

    ``length``, when given, is the number of entries the op's schema requires (one per spatial
    axis, ...): a list of another length is refused here rather than silently truncated later.
    """
    value = attribute(node, name, default)
    if not isinstance(value, (list, tuple, range)) or not all(isinstance(item, _NUMBER) for item in value):
        raise _refuse(node, name, value, "a list of integers")
    if length is not None and len(value) != length:
        raise _refuse(node, name, value, f"a list of {length} integers")
    return [int(item) for item in value]
