"""The one place fimaudit reads ONNX protos: attributes, constants, opsets, IR versions.

Everything here depends on ``onnx``, ``numpy`` and ``fimaudit.errors`` only (no other fimaudit
module), so every layer (graph/, autodiff/, bounds/, runtime.py) can import it without import cycles.

Policies, stated once:
- Attribute strings (``STRING`` and ``STRINGS``) are decoded as UTF-8 (the loader refuses models
  whose strings are not UTF-8, so decoding cannot fail on a loaded model).
- Constants keep ONNX's types: an initializer or ``Constant(value=...)`` its tensor's type,
  ``value_float(s)`` float32 and ``value_int(s)`` int64. String and sparse constants have no
  numeric value here (None).
- The default domain is ``""`` or its alias ``"ai.onnx"``.
- Attributes are read typed (``int_attribute``, ``float_attribute``, ``ints_attribute``,
  ``str_attribute``): absent gives the default (None, or a ModelError for ``REQUIRED``), a value of
  the wrong type or length a ModelError naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Final, overload

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fimaudit.errors import ModelError

DEFAULT_DOMAINS = ("", "ai.onnx")

# Constant-node attributes that hold a numeric value, and the dtype of the list-valued ones.
_CONSTANT_ATTRIBUTES = {
    "value": None,
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of ``node``'s attribute ``name`` (strings and string lists decoded), or ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                return value.decode("utf-8")
            if isinstance(value, list) and value and isinstance(value[0], bytes):
                return [item.decode("utf-8") for item in value]
            return value
    return default


class Required:
    """The type of ``REQUIRED``: the default of an attribute that the op's schema makes required."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: Pass as ``default`` to the typed readers below: an absent attribute is then a ``ModelError``.
REQUIRED: Final = Required()

_INTEGER = (int, np.integer)
_NUMBER = (int, float, np.integer, np.floating)


def _attribute_error(node: onnx.NodeProto, name: str, problem: str) -> ModelError:
    return ModelError(f"{node.op_type} node {node.name!r}: attribute {name!r} {problem}")


def _typed(node: onnx.NodeProto, name: str, default: object) -> object:
    """The attribute's value, ``default`` when absent, or a ModelError when absent and ``REQUIRED``."""
    value = attribute(node, name)
    if value is not None:
        return value
    if isinstance(default, Required):
        raise _attribute_error(node, name, "is required and absent")
    return default


# The typed readers: the type the op's schema gives the attribute, stated for the type checker and
# checked. ``default`` is returned when the attribute is absent; None (the default) makes the result
# Optional, ``REQUIRED`` refuses an absent attribute. A value of another type is a ModelError naming
# the node, never a TypeError from deep inside a caller.
@overload
def int_attribute(node: onnx.NodeProto, name: str, default: int | Required) -> int: ...
@overload
def int_attribute(node: onnx.NodeProto, name: str, default: None = None) -> int | None: ...
def int_attribute(node: onnx.NodeProto, name: str, default: int | Required | None = None) -> int | None:
    """INT attribute ``name`` of ``node`` (such as ``axis``); ``default`` when absent (see above)."""
    value = _typed(node, name, default)
    if value is None:
        return None
    if not isinstance(value, _NUMBER):
        raise _attribute_error(node, name, f"is {value!r}, not an integer")
    return int(value)


@overload
def float_attribute(node: onnx.NodeProto, name: str, default: float | Required) -> float: ...
@overload
def float_attribute(node: onnx.NodeProto, name: str, default: None = None) -> float | None: ...
def float_attribute(node: onnx.NodeProto, name: str, default: float | Required | None = None) -> float | None:
    """FLOAT attribute ``name`` of ``node`` (such as ``alpha``); ``default`` when absent (see above)."""
    value = _typed(node, name, default)
    if value is None:
        return None
    if not isinstance(value, _NUMBER):
        raise _attribute_error(node, name, f"is {value!r}, not a number")
    return float(value)


@overload
def ints_attribute(
    node: onnx.NodeProto, name: str, default: Sequence[int] | Required, *, length: int | None = None
) -> list[int]: ...
@overload
def ints_attribute(
    node: onnx.NodeProto, name: str, default: None = None, *, length: int | None = None
) -> list[int] | None: ...
def ints_attribute(
    node: onnx.NodeProto, name: str, default: Sequence[int] | Required | None = None, *, length: int | None = None
) -> list[int] | None:
    """INTS attribute ``name`` of ``node`` (such as ``pads``); ``default`` when absent (see above).

    ``length``, when given, is the number of entries the op's schema requires (one per spatial
    axis, ...): a list of another length is refused here rather than silently truncated later.
    """
    value = _typed(node, name, default)
    if value is None:
        return None
    if not isinstance(value, list | tuple | range) or not all(isinstance(item, _INTEGER) for item in value):
        raise _attribute_error(node, name, f"is {value!r}, not a list of integers")
    if length is not None and len(value) != length:
        raise _attribute_error(node, name, f"has {len(value)} entries, not {length}")
    return [int(item) for item in value]


@overload
def str_attribute(node: onnx.NodeProto, name: str, default: str | Required) -> str: ...
@overload
def str_attribute(node: onnx.NodeProto, name: str, default: None = None) -> str | None: ...
def str_attribute(node: onnx.NodeProto, name: str, default: str | Required | None = None) -> str | None:
    """STRING attribute ``name`` of ``node`` (decoded); ``default`` when absent (see above)."""
    value = _typed(node, name, default)
    if value is None or isinstance(value, str):
        return value
    raise _attribute_error(node, name, f"is {value!r}, not a string")


def attributes_of(node: onnx.NodeProto) -> dict[str, object]:
    """Every attribute of ``node`` as ``helper.make_node`` takes it (strings left as bytes): to emit a twin."""
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def is_constant_node(node: onnx.NodeProto) -> bool:
    """``node`` is an ONNX ``Constant`` with a numeric value (not a string or sparse one)."""
    return (
        node.op_type == "Constant"
        and node.domain in DEFAULT_DOMAINS
        and bool(node.output)
        and any(attr.name in _CONSTANT_ATTRIBUTES for attr in node.attribute)
    )


def node_constant(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node in ONNX's types, or None (string or sparse value)."""
    for attr in node.attribute:
        if attr.name not in _CONSTANT_ATTRIBUTES:
            continue
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        return np.array(helper.get_attribute_value(attr), dtype=_CONSTANT_ATTRIBUTES[attr.name])
    return None


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of the initializer or Constant-node output ``name``; None when computed at run time."""
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.output and node.output[0] == name and is_constant_node(node):
            return node_constant(node)
    return None


class LazyConstants(MutableMapping[str, np.ndarray]):
    """Constants by name, converted from their proto (initializer or Constant node) on first read.

    A 500 MB model's weights are not all copied to numpy up front: rules and patterns look at few
    of them, each once. Values assigned later (folded constants, rewritten weights) are kept as
    given; membership never converts anything.
    """

    def __init__(self, sources: dict[str, onnx.TensorProto | onnx.NodeProto | np.ndarray] | None = None) -> None:
        self._values: dict[str, onnx.TensorProto | onnx.NodeProto | np.ndarray] = dict(sources or {})

    @classmethod
    def of_graph(cls, graph: onnx.GraphProto, constant_nodes: bool = True) -> LazyConstants:
        """The initializers of ``graph`` and (unless told not to) its numeric Constant nodes' outputs."""
        sources: dict[str, onnx.TensorProto | onnx.NodeProto | np.ndarray] = {
            init.name: init for init in graph.initializer
        }
        if constant_nodes:
            for node in graph.node:
                if is_constant_node(node):
                    sources[node.output[0]] = node
        return cls(sources)

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._values[name]
        if isinstance(value, onnx.TensorProto):
            value = self._values[name] = numpy_helper.to_array(value)
        elif isinstance(value, onnx.NodeProto):
            converted = node_constant(value)
            if converted is None:  # unreachable for sources taken through is_constant_node
                raise KeyError(name)
            value = self._values[name] = converted
        return value

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._values[name] = value

    def __delitem__(self, name: str) -> None:
        del self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    """The opset version ``model`` imports for ``domain``; 0 when it imports none.

    ``domain=""`` means the default ONNX domain, imported as ``""`` or ``"ai.onnx"``.
    """
    domains = DEFAULT_DOMAINS if domain in DEFAULT_DOMAINS else (domain,)
    return max((int(entry.version) for entry in model.opset_import if entry.domain in domains), default=0)


def lowest_ir_version_for(model: onnx.ModelProto) -> int:
    """The lowest IR version whose ONNX release knows every opset the model imports.

    Used to lower a model written by a newer ``onnx`` (IR version too new for ONNX Runtime)
    without changing its meaning: an IR version only constrains the file format and the
    opsets it can carry.
    """
    default_opset = opset_version(model) or 1
    for _release, ir_version, opset, *_rest in helper.VERSION_TABLE:
        if opset >= default_opset:
            return int(ir_version)
    return int(model.ir_version)


#: Initializers with more elements than this are weights: shape inference needs their type and
#: shape only (shape arithmetic reads small constants: Reshape targets, axes, scales).
WEIGHT_ELEMENTS = 4096


def weights_as_inputs(
    initializers: Iterable[onnx.TensorProto], declared: set[str] | frozenset[str] = frozenset()
) -> tuple[list[onnx.TensorProto], list[onnx.ValueInfoProto]]:
    """(the small initializers, typed graph inputs standing for the weights) for a model only inference reads.

    A weight already ``declared`` as a graph input (IR 3 models list initializers as inputs too)
    gets no second input.
    """
    constants: list[onnx.TensorProto] = []
    weights: list[onnx.ValueInfoProto] = []
    for init in initializers:
        if int(np.prod(init.dims, dtype=np.int64)) <= WEIGHT_ELEMENTS:
            constants.append(init)
        elif init.name not in declared:
            weights.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return constants, weights


def element_size(data_type: int) -> int | None:
    """Bytes per element of a tensor type; None for strings (variable length) and unknown types."""
    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return None


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """The size of ``tensor``'s values, from its type and shape where they fix it.

    Why not ``ByteSize()``: protobuf's upb backend serialises the message to measure it, a copy
    of the values; summing a large model's weights that way cost seconds (VGG-11 at 3x224x224:
    1.5 s per sharing of a forward half). Strings and unknown types fall back to ``ByteSize()``.
    """
    itemsize = element_size(tensor.data_type)
    if itemsize is None:
        return int(tensor.ByteSize())
    return math.prod(int(d) for d in tensor.dims) * itemsize


def infer_shapes_light(model: onnx.ModelProto, *, check_type: bool = False, data_prop: bool = False) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model, ...)`` without handing it the weights' bytes.

    Why: ``infer_shapes`` serialises the whole model, and the C++ result is parsed back, weights
    included (VGG-11's 491 MiB: about 8 s a call under load, and an audit made eight calls).
    Here inference runs on a copy whose large initializers are typed graph inputs instead (same
    types and shapes, so the same inference; small constants stay, so shape arithmetic still
    propagates), and its value infos and outputs are put on one in-memory copy of the model.
    Raises what ``infer_shapes`` raises.
    """
    graph = model.graph
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    light_graph = light.graph
    light_graph.name = graph.name
    light_graph.node.extend(graph.node)
    light_graph.input.extend(graph.input)
    light_graph.output.extend(graph.output)
    light_graph.value_info.extend(graph.value_info)
    light_graph.sparse_initializer.extend(graph.sparse_initializer)
    constants, weights = weights_as_inputs(graph.initializer, {value.name for value in graph.input})
    light_graph.initializer.extend(constants)
    light_graph.input.extend(weights)
    inferred = onnx.shape_inference.infer_shapes(light, check_type=check_type, strict_mode=False, data_prop=data_prop)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.value_info[:]
    result.graph.value_info.extend(inferred.graph.value_info)
    del result.graph.output[:]
    result.graph.output.extend(inferred.graph.output)
    return result
