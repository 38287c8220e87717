"""Small read-only helpers over ONNX graphs: tensor types, shapes, producers, reachability."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

Dim = int | str | None

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def dtype_name(elem_type: int) -> str:
    """'float32', 'int64', ... for an ONNX element type (or 'undefined')."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # bfloat16 and friends have no numpy dtype
        pass
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:  # a number no ONNX release defines (corrupt or hostile file)
        return f"unknown type {elem_type}"


def value_shape(value: onnx.ValueInfoProto) -> list[Dim] | None:
    """Dims of a tensor value: int when known, the symbol when named, None when unknown."""
    if not value.type.HasField("tensor_type"):
        return None
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def is_tensor(value: onnx.ValueInfoProto) -> bool:
    """The value is a tensor (not a sequence, map or optional)."""
    return value.type.HasField("tensor_type")


def is_float_tensor(value: onnx.ValueInfoProto) -> bool:
    """The value is a tensor of a floating-point type."""
    return is_tensor(value) and value.type.tensor_type.elem_type in FLOAT_TYPES


def type_description(value: onnx.ValueInfoProto) -> str:
    """Human-readable type: 'tensor(float32)', 'seq(map(int64,tensor(float)))', ..."""
    if is_tensor(value):
        return f"tensor({dtype_name(value.type.tensor_type.elem_type)})"
    which = value.type.WhichOneof("value")
    return which or "unknown"


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (IR < 4 lists weights as inputs)."""
    initializers = {init.name for init in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Map from tensor name to the node that produces it."""
    return {out: node for node in graph.node for out in node.output if out}


def readers_of(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order (built once, asked many times)."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                found.setdefault(name, []).append(node)
    return found


def all_value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every typed tensor the model knows about (inputs, outputs, inferred intermediates)."""
    graph = model.graph
    infos = {value.name: value for value in graph.value_info}
    infos.update({value.name: value for value in graph.input})
    infos.update({value.name: value for value in graph.output})
    return infos


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a control-flow node's subgraphs read from the enclosing scope (over-approximated)."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        for graph in graphs:
            for inner in graph.node:
                names.update(name for name in inner.input if name)
                names |= subgraph_inputs(inner)
    return names


def drop_unread(nodes: list[onnx.NodeProto], keep: set[str]) -> None:
    """Remove nodes none of whose outputs is read (by ``nodes`` or as ``keep``), until none is left."""
    while True:
        read = {name for node in nodes for name in node.input} | keep
        live = [node for node in nodes if any(name in read for name in node.output)]
        if len(live) == len(nodes):
            return
        nodes[:] = live


def nodes_needed_for(graph: onnx.GraphProto, outputs: Iterable[str]) -> list[onnx.NodeProto]:
    """Nodes (in graph order) that the given tensors depend on."""
    return [graph.node[i] for i in sorted(node_indices_needed_for(graph, outputs))]


def node_indices_needed_for(
    graph: onnx.GraphProto, outputs: Iterable[str], allowed: set[int] | None = None
) -> set[int]:
    """Indices of the nodes the given tensors depend on, walking back through ``allowed`` nodes only.

    A tensor made by a node outside ``allowed`` (None: every node) is where the walk stops: it
    is read, not recomputed (kept_forward.py splits a gradient model this way).
    """
    producer_of = {name: index for index, node in enumerate(graph.node) for name in node.output if name}
    needed: set[int] = set()
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        index = producer_of.get(name)
        if index is None or (allowed is not None and index not in allowed):
            continue
        needed.add(index)
        node = graph.node[index]
        stack.extend(n for n in node.input if n)
        stack.extend(subgraph_inputs(node))
    return needed


def declared_types_and_shapes(graph: onnx.GraphProto) -> tuple[dict[str, int], dict[str, list[Dim] | None]]:
    """Element types and shapes the graph declares.

    From value infos, inputs, outputs, initializers and ``Constant(value=...)`` nodes (types only
    where known; shapes with int, symbol or None dims).
    """
    types: dict[str, int] = {}
    shapes: dict[str, list[Dim] | None] = {}
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.type.HasField("tensor_type"):
            if value.type.tensor_type.elem_type:
                types[value.name] = value.type.tensor_type.elem_type
            shape = value_shape(value)
            if shape is not None:
                shapes[value.name] = shape
    for init in graph.initializer:
        types[init.name] = init.data_type
        shapes[init.name] = [int(d) for d in init.dims]
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                    shapes[node.output[0]] = [int(d) for d in attr.t.dims]
    return types, shapes
