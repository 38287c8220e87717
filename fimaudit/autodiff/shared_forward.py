"""One forward half for both gradient modes: the VJP's and the JVP's kept tensors from one run.

Why: a Lanczos step on the K x K side (fisher/operator.py) is a J^T u then a J v at one sample,
and each mode's kept-forward split (kept_forward.py) has a forward half of its own, so every
sample an estimator visits paid the network's forward pass twice before its first product.
VGG-11-BN at 3x224x224: a forward half is 107-138 ms, a Lanczos run 22 products of ~137 ms.
Both halves compute the same network on the same rows; they differ only in what they keep and
in the few nodes the rules add on the forward side (masks, statistics, folded factors).

The shared forward model is the first half (the VJP's) with the second half's nodes added where
the first does not already compute them. A second-half node is the same as a first-half node when
its op, domain, attributes and inputs (after renaming) are: the network's own nodes, copied into
both gradient models from one base model, match one by one; what the JVP's rules added gets a
prefix, as in fused_gram.py. Nothing is approximated: every kept tensor is made by the same node
from the same values as in its own half. The model keeps the first half's outputs in order and
adds the second half's kept tensors under their new names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from fimaudit.autodiff.kept_forward import SplitGradientModel
from fimaudit.graph.onnx_utils import tensor_bytes
from fimaudit.graph.tensors import subgraph_inputs

#: Second-half tensors and nodes the first half does not compute, renamed in the shared model.
PREFIX = "fimaudit_shared/"


@dataclass(frozen=True)
class SharedForward:
    """The shared forward model, its weights (added on the wire), and where the second half's tensors are."""

    model: onnx.ModelProto
    weights: tuple[onnx.TensorProto, ...]
    #: The second half's kept tensor names -> their names in the shared model (outputs or data inputs).
    second_names: dict[str, str]


def _node_key(node: onnx.NodeProto, inputs: list[str]) -> tuple:
    """What makes two nodes compute the same tensors from the same inputs."""
    attributes = tuple(attribute.SerializeToString(deterministic=True) for attribute in node.attribute)
    return node.domain, node.op_type, tuple(inputs), attributes, len(node.output)


#: Constants up to this size are matched by value as well as by name.
SMALL_CONSTANT_BYTES = 4096


def _small(tensor: onnx.TensorProto) -> bool:
    return tensor_bytes(tensor) <= SMALL_CONSTANT_BYTES


def _value_key(tensor: onnx.TensorProto) -> bytes:
    """The tensor's type, shape and values, without its name."""
    unnamed = onnx.TensorProto()
    unnamed.CopyFrom(tensor)
    unnamed.ClearField("name")
    return unnamed.SerializeToString(deterministic=True)


def _computed_by(graph: onnx.GraphProto) -> tuple[dict[tuple, list[str]], dict[str, str]]:
    """Each distinct computation of ``graph`` (key -> outputs) and its repeats' outputs -> the first's.

    A half may compute one thing twice (a rule's Shape of x beside the network's): the second
    half's copy of either must find the same key.
    """
    index: dict[tuple, list[str]] = {}
    same: dict[str, str] = {}
    for node in graph.node:
        key = _node_key(node, [same.get(name, name) for name in node.input])
        found = index.get(key)
        if found is not None and [bool(name) for name in found] == [bool(name) for name in node.output]:
            same.update((name, earlier) for name, earlier in zip(node.output, found, strict=True) if name)
        else:
            index.setdefault(key, list(node.output))
    return index, same


def _names_of(graph: onnx.GraphProto, weights: Mapping[str, onnx.TensorProto]) -> set[str]:
    names = {name for node in graph.node for name in [*node.input, *node.output] if name}
    names |= {name for node in graph.node for name in subgraph_inputs(node)}
    return names | {value.name for value in graph.input} | set(weights)


def share_forward(
    first: onnx.ModelProto,
    first_weights: Mapping[str, onnx.TensorProto],
    second: SplitGradientModel,
    logits: str,
) -> SharedForward | None:
    """The forward half ``first`` extended to compute ``second``'s kept tensors too, or None.

    ``first`` is a kept-forward half without initializers and ``first_weights`` looks its weights
    up by name (the caller need not hold a split of its own). None where sharing would not
    save the forward pass (the second half's logits are not the first's), the data inputs
    differ or an opset's version does, a node with subgraphs would need its outer reads
    renamed, or a renamed tensor would meet a first-half name (a hostile model may use the
    prefix itself).
    """
    graph_a, graph_b = first.graph, second.forward.graph
    data = {value.name for value in graph_a.input}
    if data != {value.name for value in graph_b.input}:
        return None
    versions = {opset.domain: opset.version for opset in first.opset_import}
    if any(versions.get(opset.domain, opset.version) != opset.version for opset in second.forward.opset_import):
        return None  # one node would mean two things
    taken = _names_of(graph_a, first_weights)
    mapping = {name: name for name in data}
    weights = {name: first_weights[name] for name in _weights_read(graph_a, first_weights)}

    def renamed(name: str) -> str | None:
        new = PREFIX + name
        return None if new in taken else new

    by_value = {_value_key(weights[name]): name for name in sorted(weights) if _small(weights[name])}
    for tensor in second.forward_weights:
        if first_weights.get(tensor.name) == tensor:
            mapping[tensor.name] = tensor.name
            weights[tensor.name] = first_weights[tensor.name]
            continue
        twin = by_value.get(_value_key(tensor)) if _small(tensor) else None
        if twin is not None:  # a rule's constant (a zero, a one) made under another name
            mapping[tensor.name] = twin
            continue
        new = renamed(tensor.name)
        if new is None:
            return None
        moved = copy.deepcopy(tensor)
        moved.name = new
        mapping[tensor.name] = new
        weights[new] = moved
    index, same = _computed_by(graph_a)
    added: list[onnx.NodeProto] = []
    for node in graph_b.node:
        try:
            inputs = [same.get(mapping[name], mapping[name]) if name else name for name in node.input]
        except KeyError:
            return None  # a read of something neither half declares
        outer = subgraph_inputs(node)
        if any(mapping.get(name, name) != name for name in outer):
            return None  # the subgraph reads a renamed tensor by its old name
        key = _node_key(node, inputs)
        found = index.get(key)
        if found is not None and [bool(name) for name in found] == [bool(name) for name in node.output]:
            mapping.update((old, new) for old, new in zip(node.output, found, strict=True) if old)
            continue
        if outer:
            return None  # a node with subgraphs that the first half lacks: its outer reads are not renamed
        outputs = [renamed(name) if name else name for name in node.output]
        if any(name is None for name in outputs):
            return None
        moved = copy.deepcopy(node)
        moved.name = PREFIX + node.name
        moved.input[:] = inputs
        moved.output[:] = [name or "" for name in outputs]
        mapping.update((old, new) for old, new in zip(node.output, moved.output, strict=True) if old)
        index[key] = list(moved.output)
        added.append(moved)
    if mapping.get(logits) != logits:
        return None  # no common forward pass to share
    if any(name not in mapping for name in second.kept):
        return None

    shared = onnx.ModelProto()
    shared.CopyFrom(first)
    graph = shared.graph
    del graph.initializer[:]
    graph.node.extend(added)
    declared = {value.name for value in graph.output} | data
    for value in graph_b.output:
        name = mapping[value.name]
        if name in declared:
            continue
        graph.output.append(value)
        graph.output[-1].name = name
        declared.add(name)
    domains = {opset.domain for opset in shared.opset_import}
    shared.opset_import.extend(opset for opset in second.forward.opset_import if opset.domain not in domains)
    used = _weights_read(graph, weights)
    return SharedForward(
        shared,
        tuple(weights[name] for name in sorted(used)),
        {name: mapping[name] for name in second.kept},
    )


def _weights_read(graph: onnx.GraphProto, weights: Mapping[str, onnx.TensorProto]) -> set[str]:
    """The names in ``weights`` that the graph's nodes read (subgraphs' outer reads included)."""
    read = {name for node in graph.node for name in node.input if name}
    read |= {name for node in graph.node for name in subgraph_inputs(node)}
    return {name for name in read if name in weights}
