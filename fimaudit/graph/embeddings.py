"""Differentiate a token-id model in embedding space (``--wrt embeddings``, issue 16 item 8).

Token ids are integers: a model that reads them has no input gradient. What is differentiable is
the first float tensor the ids produce. Two forms are recognised from the graph:

- **embeddings** (BERT, DistilBERT, ...): a Gather on a float 2-D initializer (the word table)
  indexed by an integer graph input, followed by a chain of Adds of other float tensors (position
  and token-type embeddings, themselves Gathers); the *sum* that feeds the embedding LayerNorm is
  the differentiable tensor. Without Adds, the word Gather's output is.
- **one-hot**: a OneHot of an integer graph input (optionally followed by a Cast to float), or
  ``Cast(Equal(ids, classes))`` to float: the float one-hot tensor is the differentiable tensor.

The rewrite (:func:`rewrite_at`) makes that tensor a new float graph input, ``fimaudit_embeddings``;
every node that read it reads the input instead, and nodes no output needs any more (the lookups)
are dropped. What the rest of the graph still computes from the integer inputs (the attention
mask's processing, shapes) stays fed by them. :func:`embedding_model` is the other half: the
original graph cut at that tensor, run once per sample to find the model's real embedding point.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import onnx
from onnx import helper

from fimaudit.errors import ModelError
from fimaudit.graph.onnx_utils import constant_value, infer_shapes_light
from fimaudit.graph.tensors import (
    all_value_infos,
    graph_inputs,
    is_float_tensor,
    nodes_needed_for,
    readers_of,
    subgraph_inputs,
    value_shape,
)

logger = logging.getLogger(__name__)

EMBEDDINGS = "fimaudit_embeddings"
WRT_CHOICES = ("input", "embeddings")

# Ops that carry integer ids unchanged in value (a Cast to int32, a Reshape of a flattened batch).
_ID_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
_INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass
class EmbeddingSite:
    """Where a token-id model's differentiable tensor is, and what feeds it."""

    #: "embeddings" or "one_hot".
    kind: str
    #: The integer graph input holding the ids (input_ids).
    ids_input: str
    #: The float tensor that becomes the new input (the embedding sum, or the one-hot tensor).
    tensor: str
    #: Nodes that were recognised, for messages: the word Gather, the Adds, the OneHot.
    nodes: list[str] = field(default_factory=list)
    #: Float 2-D tables added into the sum (word first), for messages.
    tables: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The site in words, for messages and the report."""
        if self.kind == "one_hot":
            return f"the one-hot encoding {self.tensor!r} of {self.ids_input!r}"
        parts = " + ".join(repr(t) for t in self.tables) or "the lookup"
        return f"the embedding sum {self.tensor!r} ({parts}) of {self.ids_input!r}"


def _integer_inputs(graph: onnx.GraphProto) -> list[str]:
    return [
        value.name for value in graph_inputs(graph)
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type in _INTEGER_TYPES
    ]


def _id_tensors(graph: onnx.GraphProto, readers: dict[str, list[onnx.NodeProto]], name: str) -> set[str]:
    """``name`` and the tensors that carry its values unchanged (Casts, Reshapes, ...)."""
    found, frontier = set(), [name]
    while frontier:
        current = frontier.pop()
        if current in found:
            continue
        found.add(current)
        for node in readers.get(current, []):
            if node.op_type in _ID_PASSTHROUGH and node.input and node.input[0] == current:
                frontier.extend(out for out in node.output if out)
    return found


def _float_tables(graph: onnx.GraphProto) -> set[str]:
    return {
        init.name for init in graph.initializer
        if init.data_type in _FLOAT_TYPES and len(init.dims) == 2
    }


def _depends_on(graph: onnx.GraphProto, tensor: str, source: str) -> bool:
    """True when ``tensor`` is computed from ``source``."""
    kept = nodes_needed_for(graph, [tensor])
    return tensor == source or any(source in node.input for node in kept)


def _cast_to_float(node: onnx.NodeProto) -> bool:
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    return node.op_type == "Cast" and to in _FLOAT_TYPES


def _embedding_sum(
    graph: onnx.GraphProto, readers: dict[str, list[onnx.NodeProto]], gather: onnx.NodeProto, tables: set[str]
) -> EmbeddingSite:
    """From the word Gather, follow the Adds of other float tensors to the sum."""
    current = gather.output[0]
    nodes, used_tables = [gather.name or gather.output[0]], [gather.input[0]]
    producer_of = {out: node for node in graph.node for out in node.output if out}
    while True:
        following = readers.get(current, [])
        if len(following) != 1 or following[0].op_type != "Add" or len(following[0].input) != 2:
            break
        add = following[0]
        other = add.input[1] if add.input[0] == current else add.input[0]
        if other == current or _depends_on(graph, other, current):
            break
        nodes.append(add.name or add.output[0])
        other_node = producer_of.get(other)
        if other_node is not None and other_node.op_type == "Gather" and other_node.input[0] in tables:
            used_tables.append(other_node.input[0])
        else:
            used_tables.append(other)
        current = add.output[0]
    return EmbeddingSite("embeddings", "", current, nodes, used_tables)


def find_embedding_site(model: onnx.ModelProto) -> EmbeddingSite | None:
    """The embedding (or one-hot) tensor computed from an integer input, or None (module doc)."""
    graph = model.graph
    readers = readers_of(graph)
    tables = _float_tables(graph)
    integer_inputs = _integer_inputs(graph)
    carried = {ids: sorted(_id_tensors(graph, readers, ids)) for ids in integer_inputs}
    # Lookups first (the common case), then OneHot, then Cast(Equal(ids, classes)).
    for ids in integer_inputs:
        for name in carried[ids]:
            for node in readers.get(name, []):
                if (
                    node.op_type == "Gather" and len(node.input) > 1
                    and node.input[1] == name and node.input[0] in tables
                ):
                    site = _embedding_sum(graph, readers, node, tables)
                    site.ids_input = ids
                    return site
    for ids in integer_inputs:
        for name in carried[ids]:
            for node in readers.get(name, []):
                if node.op_type == "OneHot" and node.input[0] == name:
                    tensor = node.output[0]
                    after = readers.get(tensor, [])
                    if len(after) == 1 and _cast_to_float(after[0]):
                        tensor = after[0].output[0]
                    return EmbeddingSite("one_hot", ids, tensor, [node.name or node.output[0]])
    for ids in integer_inputs:
        for name in carried[ids]:
            for node in readers.get(name, []):
                if node.op_type != "Equal" or len(node.input) != 2:
                    continue
                classes = constant_value(model, node.input[1] if node.input[0] == name else node.input[0])
                after = readers.get(node.output[0], [])
                # A comparison with one value (ids == pad) is a mask, not an encoding.
                if classes is not None and classes.size > 1 and len(after) == 1 and _cast_to_float(after[0]):
                    return EmbeddingSite(
                        "one_hot", ids, after[0].output[0],
                        [node.name or node.output[0], after[0].name or after[0].output[0]],
                    )
    return None


def token_input_note(model: onnx.ModelProto) -> str | None:
    """One sentence for ``inspect`` and refusals when the model has token-id inputs, else None."""
    site = find_embedding_site(model)
    if site is None:
        return None
    return f"token-id input {site.ids_input!r}: --wrt embeddings differentiates with respect to {site.describe()}"


def require_site(model: onnx.ModelProto) -> EmbeddingSite:
    """The model's embedding site; ModelError naming its integer inputs when there is none."""
    site = find_embedding_site(model)
    if site is None:
        integers = _integer_inputs(model.graph)
        raise ModelError(
            "--wrt embeddings needs an embedding lookup (a Gather on a float table indexed by an integer "
            "input) or a one-hot encoding of an integer input; none was found"
            + (f" (integer inputs: {', '.join(integers)})" if integers else " (the model has no integer input)")
        )
    return site


def _site_info(model: onnx.ModelProto, site: EmbeddingSite) -> onnx.ValueInfoProto:
    """The differentiable tensor's type and shape (shape inference where the model lacks it)."""
    infos = all_value_infos(model)
    if site.tensor not in infos or not is_float_tensor(infos[site.tensor]):
        try:
            inferred = infer_shapes_light(model)
            infos = all_value_infos(inferred)
        except Exception as exc:  # inference is best effort: a missing shape is reported below
            logger.info("shape inference failed: %s", exc)
    info = infos.get(site.tensor)
    if info is None or not is_float_tensor(info):
        raise ModelError(f"cannot tell the type of {site.describe()}; --wrt embeddings needs a float tensor there")
    return info


def rewrite_at(model: onnx.ModelProto, site: EmbeddingSite) -> onnx.ModelProto:
    """A copy whose graph input ``fimaudit_embeddings`` replaces ``site.tensor`` (module doc)."""
    info = _site_info(model, site)
    rewritten = copy.deepcopy(model)
    graph = rewritten.graph
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == site.tensor:
                node.input[i] = EMBEDDINGS
    for output in graph.output:
        if output.name == site.tensor:
            raise ModelError(f"{site.describe()} is itself a model output; nothing to audit after it")
    shape = value_shape(info)
    dims = [d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None) for d in (shape or [])]
    if dims:
        dims[0] = "batch"
    new_input = helper.make_tensor_value_info(EMBEDDINGS, info.type.tensor_type.elem_type, dims or None)
    kept = nodes_needed_for(graph, [out.name for out in graph.output])
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input if name}
    for node in kept:
        used |= subgraph_inputs(node)
    used |= {out.name for out in graph.output}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    inputs = [value for value in graph.input if value.name in used]
    del graph.input[:]
    graph.input.append(new_input)
    graph.input.extend(inputs)
    produced = {out for node in kept for out in node.output}
    values = [value for value in graph.value_info if value.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(values)
    return rewritten


def embedding_model(model: onnx.ModelProto, site: EmbeddingSite) -> onnx.ModelProto:
    """The original graph cut at ``site.tensor``: integer inputs in, embeddings out."""
    info = _site_info(model, site)
    cut = copy.deepcopy(model)
    graph = cut.graph
    kept = nodes_needed_for(graph, [site.tensor])
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input if name}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    inputs = [value for value in graph.input if value.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(site.tensor, info.type.tensor_type.elem_type, None))
    del graph.value_info[:]
    return cut
