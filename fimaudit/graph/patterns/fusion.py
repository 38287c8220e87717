"""See decomposed operators as the one operator they are: LayerNorm, GELU, SiLU, HardSwish.

Why: exporters write the same layer in several ways. TorchScript at opset 17 writes GELU as
Div-Erf-Add-Mul-Mul, older opsets write LayerNorm as ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div,
and other exporters reorder those steps. Recognition must see "a LayerNorm" either way, and the
bounds need the whole operator: taken node by node, GELU's product x * (1 + erf(x / sqrt 2)) has
no global Lipschitz constant, while GELU itself has sup |gelu'| = 1.1289.

How, for pointwise activations: starting from a tensor x, collect the elementwise nodes that
read only x, scalar constants and each other (a "unary region"); evaluate the region on a grid
of numbers and compare with the known functions. Matching by values, not by node order, accepts
any arrangement of the same arithmetic and refuses anything that only looks similar.
LayerNorm is matched structurally (its reductions are not pointwise).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper
from scipy import special

from fimaudit.graph.onnx_utils import float_attribute, int_attribute, ints_attribute
from fimaudit.graph.view import GraphView

logger = logging.getLogger(__name__)

# Elementwise ops a unary region may contain, with a numpy evaluation (inputs already broadcast).
_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Pow": lambda a, b: np.power(a, b),
    "Erf": lambda a: special.erf(a),
    "Tanh": np.tanh,
    "Sigmoid": special.expit,
    "Relu": lambda a: np.maximum(a, 0.0),
    "Neg": np.negative,
    "Abs": np.abs,
    "Exp": np.exp,
    "Softplus": lambda a: np.logaddexp(0.0, a),
    "Min": np.minimum,
    "Max": np.maximum,
}
_NONLINEAR = {"Erf", "Tanh", "Sigmoid", "HardSigmoid", "Clip", "Relu", "Softplus", "Exp", "Min", "Max"}


def _gelu(t: np.ndarray) -> np.ndarray:
    return 0.5 * t * (1.0 + special.erf(t / math.sqrt(2.0)))


def _gelu_tanh(t: np.ndarray) -> np.ndarray:
    return 0.5 * t * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * t**3)))


def _silu(t: np.ndarray) -> np.ndarray:
    return t * special.expit(t)


def _hardswish(t: np.ndarray) -> np.ndarray:
    return t * np.clip(t + 3.0, 0.0, 6.0) / 6.0


def _mish(t: np.ndarray) -> np.ndarray:
    return t * np.tanh(np.logaddexp(0.0, t))


# name -> (reference function, ONNX op_type and attributes of the fused node)
KNOWN_ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str, dict[str, str]]] = {
    "gelu": (_gelu, "Gelu", {"approximate": "none"}),
    "gelu_tanh": (_gelu_tanh, "Gelu", {"approximate": "tanh"}),
    "silu": (_silu, "Silu", {}),
    "hardswish": (_hardswish, "HardSwish", {}),
    "mish": (_mish, "Mish", {}),
}

# How far past the first reader of x a unary region may reach (exporters keep activations together).
_WINDOW = 200

_GRID = np.concatenate([np.linspace(-12.0, 12.0, 4801), [-1e3, -50.0, 50.0, 1e3]])


def _evaluate_region(view: GraphView, region: list[onnx.NodeProto], source: str) -> dict[str, np.ndarray]:
    """Every region node's output on the grid (in one pass).

    A node that cannot be evaluated, and everything computed from it, is absent. The value of a
    node's output depends only on the nodes it is computed from, so one pass serves every closed
    subregion.
    """
    values: dict[str, np.ndarray] = {source: _GRID}
    for node in region:
        args: list[np.ndarray | None] = []
        for name in node.input:
            if not name:
                args.append(None)
            elif name in values:
                args.append(values[name])
            else:
                scalar = view.scalar_constant(name)
                if scalar is None:
                    break
                args.append(np.asarray(scalar, dtype=np.float64))
        else:
            try:
                with np.errstate(all="ignore"):
                    values[node.output[0]] = _evaluate_node(node, args)
            except (KeyError, ValueError, TypeError):
                pass
    return values


def _required(args: list[np.ndarray | None], index: int) -> np.ndarray:
    """Argument ``index``, which the op requires (TypeError when absent: the node is then not evaluated)."""
    value = args[index] if index < len(args) else None
    if value is None:
        raise TypeError(f"input {index} is absent")
    return value


def _evaluate_node(node: onnx.NodeProto, args: list[np.ndarray | None]) -> np.ndarray:
    op = node.op_type
    if op == "HardSigmoid":
        alpha = float_attribute(node, "alpha", 0.2)
        beta = float_attribute(node, "beta", 0.5)
        return np.clip(alpha * _required(args, 0) + beta, 0.0, 1.0)
    if op == "Clip":
        low = args[1] if len(args) > 1 and args[1] is not None else float_attribute(node, "min", -np.inf)
        high = args[2] if len(args) > 2 and args[2] is not None else float_attribute(node, "max", np.inf)
        return np.clip(_required(args, 0), low, high)
    function = _ELEMENTWISE[op]
    present = [a for a in args if a is not None]
    return np.asarray(function(*present), dtype=np.float64)


_REFERENCE_VALUES: dict[str, np.ndarray] = {}
# A few grid points checked before the whole grid: most regions are no known activation.
_PROBE_POINTS = np.linspace(0, _GRID.size - 1, 9).astype(int)


def identify_activation(values: np.ndarray) -> str | None:
    """The name of the known activation these grid values are, or None."""
    probed = values[_PROBE_POINTS]
    for name, (reference, _op, _attrs) in KNOWN_ACTIVATIONS.items():
        expected = _REFERENCE_VALUES.get(name)
        if expected is None:
            expected = _REFERENCE_VALUES[name] = reference(_GRID)
        near = expected[_PROBE_POINTS]
        if not (np.abs(probed - near) <= 1e-6 + 1e-5 * np.abs(near)).all():  # allclose, cheaper
            continue
        if np.all(np.isfinite(values)) and np.allclose(values, expected, rtol=1e-5, atol=1e-6):
            return name
    return None


def _region_nodes(view: GraphView, source: str, claimed: AbstractSet[str] = frozenset()) -> list[onnx.NodeProto]:
    """Elementwise nodes computed from ``source`` and scalar constants only (topological order).

    Only readers of tensors already in the region can join it, so the search follows consumers
    (in node order, through a heap) instead of scanning the window: linear in the region, not in
    the window or the graph. Nodes in ``claimed`` (fused already) are not elementwise any more.
    """
    position = view.positions()
    readers = view.consumers.get(source, [])
    start = min((position[node.name] for node in readers), default=len(view.nodes))
    end = start + _WINDOW
    inside: set[str] = {source}
    region: list[onnx.NodeProto] = []
    queued: set[str] = set()
    heap: list[tuple[int, str]] = []

    def enqueue(nodes: list[onnx.NodeProto]) -> None:
        for node in nodes:
            index = position[node.name]
            if index < end and node.name not in queued:
                queued.add(node.name)
                heapq.heappush(heap, (index, node.name))

    enqueue(readers)
    while heap:
        node = view.nodes[heapq.heappop(heap)[0]]
        if node.name in claimed:
            continue
        if node.op_type not in _ELEMENTWISE and node.op_type not in ("HardSigmoid", "Clip"):
            continue
        if len(node.output) != 1 or node.domain not in ("", "ai.onnx"):
            continue
        names = [name for name in node.input if name]
        if all(name in inside or view.scalar_constant(name) is not None for name in names):
            region.append(node)
            inside.add(node.output[0])
            enqueue(view.consumers.get(node.output[0], []))
        if len(region) > 24:  # activations are short; stop before wandering through a network
            break
    return region


def _closed_subregion(
    view: GraphView,
    region: list[onnx.NodeProto],
    last: onnx.NodeProto,
    produced: dict[str, onnx.NodeProto] | None = None,
) -> list[onnx.NodeProto] | None:
    """The nodes of ``region`` that ``last`` depends on, if nothing else reads their outputs."""
    if produced is None:
        produced = {node.output[0]: node for node in region}
    needed: set[str] = set()
    stack = [last.output[0]]
    while stack:
        name = stack.pop()
        node = produced.get(name)
        if node is None or node.name in needed:
            continue
        needed.add(node.name)
        stack.extend(node.input)
    members = [node for node in region if node.name in needed]
    for node in members:
        if node is last:
            continue
        for consumer in view.consumers.get(node.output[0], []):
            if consumer.name not in needed:
                return None
        if node.output[0] in view.outputs:
            return None
    return members


def fuse_activations(view: GraphView) -> list[str]:
    """Replace decomposed GELU / SiLU / HardSwish / Mish regions by one node; returns their names.

    Replacements are applied together at the end (``GraphView.replace_many``): a fused region's
    nodes are ``claimed`` and its inner tensors are no sources, which is what removing them at
    once did, without one pass over the graph per fusion.
    """
    fused: list[str] = []
    replacements: list[tuple[list[onnx.NodeProto], onnx.NodeProto, list[str]]] = []
    claimed: set[str] = set()
    inner: set[str] = set()
    for source in [name for name in list(view.consumers) if name in view.varying]:
        if source in inner:
            continue
        region = _region_nodes(view, source, claimed)
        if len(region) < 2 or not any(node.op_type in _NONLINEAR for node in region):
            continue
        best: tuple[list[onnx.NodeProto], str] | None = None
        evaluated = _evaluate_region(view, region, source)
        produced = {node.output[0]: node for node in region}
        for last in region:
            members = _closed_subregion(view, region, last, produced)
            if members is None or len(members) < 2:
                continue
            values = evaluated.get(last.output[0])
            name = identify_activation(values) if values is not None else None
            if name is not None and (best is None or len(members) > len(best[0])):
                best = (members, name)
        if best is None:
            continue
        members, name = best
        _reference, op_type, attrs = KNOWN_ACTIVATIONS[name]
        output = members[-1].output[0]
        node = helper.make_node(op_type, [source], [output], name=f"{members[-1].name}/fused_{name}", **attrs)
        replacements.append((members, node, [member.name for member in members]))
        claimed.update(member.name for member in members)
        inner.update(member.output[0] for member in members[:-1])
        fused.append(node.name)
    view.replace_many(replacements)
    return fused


# --------------------------------------------------------------------------- LayerNorm


def _single_consumer(view: GraphView, name: str, op_types: tuple[str, ...]) -> onnx.NodeProto | None:
    consumers = view.consumers.get(name, [])
    matches = [node for node in consumers if node.op_type in op_types]
    return matches[0] if len(consumers) == 1 and matches else None


def _reduce_axes(view: GraphView, node: onnx.NodeProto) -> list[int] | None:
    axes = ints_attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = view.const(node.input[1])
        axes = None if value is None else [int(a) for a in np.atleast_1d(value)]
    if axes is None or not int_attribute(node, "keepdims", 1):
        return None
    return axes


def _trailing_axis(axes: list[int], rank: int | None) -> int | None:
    """The first normalised axis when ``axes`` are the trailing axes, else None."""
    if rank is None:
        if sorted(axes) == list(range(-len(axes), 0)):
            return -len(axes)
        return None
    normal = sorted(a % rank for a in axes)
    if normal == list(range(rank - len(axes), rank)):
        return -len(axes)
    return None


class _LayerNorm(NamedTuple):
    """A matched decomposed LayerNorm: its input, axis, epsilon, optional affine constants and output."""

    x: str
    axis: int
    epsilon: float
    scale: str | None
    bias: str | None
    output: str


def _match_layernorm(view: GraphView, mean: onnx.NodeProto) -> tuple[list[onnx.NodeProto], _LayerNorm] | None:
    x = mean.input[0]
    axes = _reduce_axes(view, mean)
    shape = view.shape(x)
    if axes is None:
        return None
    axis = _trailing_axis(axes, None if shape is None else len(shape))
    if axis is None:
        return None
    subs = [
        node for node in view.consumers.get(mean.output[0], [])
        if node.op_type == "Sub" and list(node.input) == [x, mean.output[0]]
    ]
    if len(subs) != 1 or len(view.consumers.get(mean.output[0], [])) != 1:
        return None
    sub = subs[0]
    centred = sub.output[0]
    users = view.consumers.get(centred, [])
    square = next((n for n in users
                   if (n.op_type == "Pow" and n.input[0] == centred and view.scalar_constant(n.input[1]) == 2.0)
                   or (n.op_type == "Mul" and list(n.input) == [centred, centred])), None)
    divide = next((n for n in users if n.op_type == "Div" and n.input[0] == centred), None)
    if square is None or divide is None or len(users) != 2:
        return None
    variance = _single_consumer(view, square.output[0], ("ReduceMean",))
    if variance is None or _reduce_axes(view, variance) is None:
        return None
    if _trailing_axis(_reduce_axes(view, variance) or [], None if shape is None else len(shape)) != axis:
        return None
    add_eps = _single_consumer(view, variance.output[0], ("Add",))
    if add_eps is None:
        return None
    other = [name for name in add_eps.input if name != variance.output[0]]
    epsilon = view.scalar_constant(other[0]) if len(other) == 1 else None
    if epsilon is None or epsilon <= 0:
        return None
    root = _single_consumer(view, add_eps.output[0], ("Sqrt",))
    if root is None or divide.input[1] != root.output[0] or len(view.consumers.get(root.output[0], [])) != 1:
        return None
    nodes = [mean, sub, square, variance, add_eps, root, divide]
    current = divide.output[0]
    scale: str | None = None
    bias: str | None = None
    following = _single_consumer(view, current, ("Mul",))
    if following is not None:
        other = [name for name in following.input if name != current]
        if len(other) == 1 and view.const(other[0]) is not None and other[0] not in view.varying:
            scale = other[0]
            nodes.append(following)
            current = following.output[0]
    following = _single_consumer(view, current, ("Add",))
    if following is not None:
        other = [name for name in following.input if name != current]
        if len(other) == 1 and view.const(other[0]) is not None and other[0] not in view.varying:
            bias = other[0]
            nodes.append(following)
            current = following.output[0]
    return nodes, _LayerNorm(x=x, axis=axis, epsilon=epsilon, scale=scale, bias=bias, output=current)


def _normalised_shape(
    view: GraphView, x: str, axis: int, scale: str | None, bias: str | None
) -> tuple[int, ...] | None:
    shape = view.shape(x)
    if shape is not None:
        return tuple(shape[axis:])
    for name in (scale, bias):
        value = view.const(name) if name else None
        if value is not None and value.ndim >= -axis:
            return tuple(value.shape[axis:])
    return None


def fuse_layernorms(view: GraphView) -> list[str]:
    """Replace decomposed LayerNorm subgraphs by one LayerNormalization node."""
    fused: list[str] = []
    replacements: list[tuple[list[onnx.NodeProto], onnx.NodeProto, list[str]]] = []
    claimed: set[str] = set()  # nodes of a LayerNorm found already (replaced together at the end)
    for mean in [node for node in view.nodes if node.op_type == "ReduceMean"]:
        if mean.input[0] not in view.varying or mean.name in claimed:
            continue
        match = _match_layernorm(view, mean)
        if match is None:
            continue
        nodes, info = match
        if any(node.name in claimed for node in nodes):
            continue
        normalised = _normalised_shape(view, info.x, info.axis, info.scale, info.bias)
        if normalised is None:
            continue
        base = f"{mean.name}/fused_layernorm"
        scale = info.scale or f"{base}/scale"
        bias = info.bias or f"{base}/bias"
        if not info.scale:
            view.constants[scale] = np.ones(normalised, dtype=np.float32)
        if not info.bias:
            view.constants[bias] = np.zeros(normalised, dtype=np.float32)
        for name in (scale, bias):
            view.constants[name] = np.broadcast_to(view.constants[name], normalised).astype(np.float32)
            view.shapes[name] = normalised
        node = helper.make_node(
            "LayerNormalization", [info.x, scale, bias], [info.output],
            name=base, axis=info.axis, epsilon=info.epsilon,
        )
        replacements.append((nodes, node, [n.name for n in nodes]))
        claimed.update(n.name for n in nodes)
        fused.append(node.name)
    view.replace_many(replacements)
    return fused


def fuse_operators(view: GraphView) -> dict[str, list[str]]:
    """Run every fusion on ``view`` (in place); returns the fused node names by kind."""
    return {"layernorm": fuse_layernorms(view), "activation": fuse_activations(view)}
