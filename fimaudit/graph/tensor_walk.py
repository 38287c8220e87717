"""Every tensor a model can hold, wherever it hides: one walk for the loader's checks.

``onnx.external_data_helper`` walks initializers and node attribute tensors of the main graph and
its subgraphs only; a model can also carry tensors in sparse initializers (values *and* indices),
sparse attribute tensors (``Constant``'s ``sparse_value``), model-local functions (their nodes,
subgraphs and default attributes) and training-info graphs. Any of them may name external data, so
the loader checks what this module yields, and ``require_self_contained`` asserts, right before a
model is handed to ONNX Runtime, that none of them still points at a file.

The walk is iterative (a stack, not recursion): nesting depth is chosen by the model's author.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import onnx

from fimaudit.errors import ModelError

_A = onnx.AttributeProto


@dataclass(frozen=True)
class FoundTensor:
    """A tensor of the model and where it sits (for messages), e.g. ``function f/node n/attribute t``."""

    where: str
    tensor: onnx.TensorProto


@dataclass(frozen=True)
class FoundSparse:
    """A sparse tensor of the model (its ``values`` and ``indices`` are also yielded as tensors)."""

    where: str
    sparse: onnx.SparseTensorProto


# A work item of the walk: ("tensor", FoundTensor), ("sparse", FoundSparse) or ("graph", (graph, where)).
_Item = tuple[str, FoundTensor | FoundSparse | tuple[onnx.GraphProto, str]]


def _graph_items(graph: onnx.GraphProto, where: str) -> Iterator[_Item]:
    """(kind, item) pairs of one graph, its subgraphs pushed back as ('graph', ...) work items."""
    for tensor in graph.initializer:
        yield "tensor", FoundTensor(f"{where}/initializer {tensor.name!r}", tensor)
    for sparse in graph.sparse_initializer:
        yield "sparse", FoundSparse(f"{where}/sparse initializer {sparse.values.name!r}", sparse)
    for node in graph.node:
        yield from _node_items(node, f"{where}/node {node.name or node.op_type!r}")


def _node_items(node: onnx.NodeProto, where: str) -> Iterator[_Item]:
    for attribute in node.attribute:
        yield from _attribute_items(attribute, f"{where}/attribute {attribute.name!r}")


def _attribute_items(attribute: onnx.AttributeProto, where: str) -> Iterator[_Item]:
    # Fields are read whatever ``type`` claims: a hostile model may set a field its type does not name.
    if attribute.HasField("t"):
        yield "tensor", FoundTensor(where, attribute.t)
    for index, tensor in enumerate(attribute.tensors):
        yield "tensor", FoundTensor(f"{where}[{index}]", tensor)
    if attribute.HasField("sparse_tensor"):
        yield "sparse", FoundSparse(where, attribute.sparse_tensor)
    for index, sparse in enumerate(attribute.sparse_tensors):
        yield "sparse", FoundSparse(f"{where}[{index}]", sparse)
    if attribute.HasField("g"):
        yield "graph", (attribute.g, f"{where}/graph")
    for index, graph in enumerate(attribute.graphs):
        yield "graph", (graph, f"{where}/graph[{index}]")


def _walk(model: onnx.ModelProto) -> Iterator[FoundTensor | FoundSparse]:
    pending: list[_Item] = [("graph", (model.graph, "graph"))]
    for function in model.functions:
        name = f"function {function.domain + '.' if function.domain else ''}{function.name}"
        for node in function.node:
            pending.extend(_node_items(node, f"{name}/node {node.name or node.op_type!r}"))
        for attribute in getattr(function, "attribute_proto", []):  # IR >= 9: default attribute values
            pending.extend(_attribute_items(attribute, f"{name}/default attribute {attribute.name!r}"))
    for index, info in enumerate(model.training_info):
        pending.append(("graph", (info.initialization, f"training_info[{index}]/initialization")))
        pending.append(("graph", (info.algorithm, f"training_info[{index}]/algorithm")))
    while pending:
        kind, item = pending.pop()
        if kind == "graph":
            assert isinstance(item, tuple)
            graph, where = item
            pending.extend(_graph_items(graph, where))
        elif kind == "sparse":
            found = item
            assert isinstance(found, FoundSparse)
            yield found
            yield FoundTensor(f"{found.where} values", found.sparse.values)
            yield FoundTensor(f"{found.where} indices", found.sparse.indices)
        else:
            assert isinstance(item, FoundTensor)
            yield item


def all_tensors(model: onnx.ModelProto) -> Iterator[FoundTensor]:
    """Every TensorProto the model holds: dense, sparse values and indices, in every graph and function."""
    for found in _walk(model):
        if isinstance(found, FoundTensor):
            yield found


def all_sparse_tensors(model: onnx.ModelProto) -> Iterator[FoundSparse]:
    """Every SparseTensorProto the model holds (initializers and attributes, anywhere)."""
    for found in _walk(model):
        if isinstance(found, FoundSparse):
            yield found


def uses_external_data(tensor: onnx.TensorProto) -> bool:
    """The tensor claims its bytes live in a file (either marker counts: ONNX Runtime reads both)."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def require_self_contained(model: onnx.ModelProto, weights: Iterable[onnx.TensorProto] = ()) -> None:
    """Refuse a model (or ``weights`` sent beside it) that still names an external file anywhere.

    Defence in depth before a model is serialised for ONNX Runtime, which would resolve such a
    name against the working directory: the loader has already read every external tensor into
    memory, so finding one here means a bug, not a bad model, but it must still never be read.
    """
    found = itertools.chain(((entry.where, entry.tensor) for entry in all_tensors(model)),
                            ((f"initializer {tensor.name!r}", tensor) for tensor in weights))
    for where, tensor in found:
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            raise ModelError(
                f"{where} still refers to external data {location[:80]!r}; refusing to hand it to "
                "ONNX Runtime (only fully loaded models are run)"
            )
