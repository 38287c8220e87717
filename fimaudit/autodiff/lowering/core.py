"""The lowering pass: the driver, the per-op table, and the tools the lowerings share.

- :class:`Lowerer` is what a lowering function gets: the node's facts (inferred shapes and types,
  constants folded on demand), an emitter of new nodes and initializers valid at the model's
  opset (``slice``/``squeeze``/``unsqueeze`` pick the opset's form), fresh names, and
  :meth:`Lowerer.inline` which copies a subgraph into the outer graph with its own tensors renamed.
- :func:`lower_for_gradients` runs rounds of shape inference + rewriting of the nodes on the
  differentiable path until none is left to rewrite.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fimaudit.autodiff import registry
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import DEFAULT_DOMAINS, LazyConstants, infer_shapes_light, opset_version
from fimaudit.graph.tensors import FLOAT_TYPES, Dim, declared_types_and_shapes, subgraph_inputs

logger = logging.getLogger(__name__)

#: The most nodes one rewrite (one unrolled Loop/Scan/LSTM/GRU/RNN) may add.
MAX_UNROLLED_NODES = 10_000
#: Rounds of rewriting (each round lowers one level of nesting).
MAX_ROUNDS = 32
#: Largest constant (in elements) the folder evaluates to decide a condition or a trip count.
_FOLD_LIMIT = 100_000

Lowering = Callable[["Lowerer", onnx.NodeProto], None]
_LOWERINGS: dict[str, Lowering] = {}


def lowering(op_type: str) -> Callable[[Lowering], Lowering]:
    """Register the decorated function as the lowering of the default-domain op ``op_type``.

    The function emits the replacement through the :class:`Lowerer` (whose emitted nodes must
    produce every non-empty output name of the node) or raises :class:`Refusal` saying why not.
    """

    def register(function: Lowering) -> Lowering:
        if op_type in _LOWERINGS:
            raise ValueError(f"a lowering for {op_type} is registered twice")
        _LOWERINGS[op_type] = function
        return function

    return register


def lowered_ops() -> list[str]:
    """Ops the pass can rewrite (in their lowerable forms)."""
    _load()
    return sorted(_LOWERINGS)


def _load() -> None:
    import fimaudit.autodiff.lowering.control_flow  # noqa: F401  (registers If, Loop, Scan)
    import fimaudit.autodiff.lowering.recurrent  # noqa: F401  (registers LSTM, GRU, RNN)


class Refusal(Exception):
    """A lowering cannot rewrite this node; the message says why (becomes an UnsupportedOpError)."""


def _all_names(graph: onnx.GraphProto, names: set[str]) -> set[str]:
    names.update(value.name for value in [*graph.input, *graph.output, *graph.value_info])
    names.update(init.name for init in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                _all_names(sub, names)
    return names


class Lowerer:
    """Emits one node's replacement into a shared list of nodes and initializers."""

    def __init__(
        self, model: onnx.ModelProto, shapes: dict[str, list[Dim] | None], types: dict[str, int], taken: set[str]
    ) -> None:
        self.opset = opset_version(model)
        self.shapes = shapes
        self.types = types
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants = LazyConstants.of_graph(model.graph)
        self._producers: dict[str, onnx.NodeProto] = {
            out: node for node in model.graph.node for out in node.output if out
        }
        self._counter = 0

    # ---- names and constants -------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor or node name used nowhere in the model (nested graphs included)."""
        base = base or "t"
        while True:
            self._counter += 1
            name = f"{base}__lw{self._counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def constant(self, value: np.ndarray, base: str = "const") -> str:
        """A new initializer holding ``value`` (its name)."""
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        self._constants[name] = np.asarray(value)
        return name

    def ints(self, values: list[int], base: str = "idx") -> str:
        """A new 1-D int64 initializer (indices, axes, starts/ends)."""
        return self.constant(np.array(values, dtype=np.int64), base)

    def value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when known before run time; None when computed at run time.

        Known: an initializer or Constant, or an op (Cast, Identity, Not, Equal, ...) with no
        subgraph on such values, folded by onnx's reference evaluator.
        """
        if not name:
            return None
        if name in self._constants:
            return self._constants[name]
        node = self._producers.get(name)
        graph_types = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        if node is None or any(attr.type in graph_types for attr in node.attribute):
            return None
        if node.domain not in DEFAULT_DOMAINS or node.op_type.startswith("Random"):
            return None
        inputs = [self.value(item) if item else None for item in node.input]
        if any(item and value is None for item, value in zip(node.input, inputs, strict=True)):
            return None
        if sum(int(np.size(value)) for value in inputs if value is not None) > _FOLD_LIMIT:
            return None
        try:
            from onnx.reference import ReferenceEvaluator

            feeds = {f"in{i}": value for i, value in enumerate(inputs) if value is not None}
            folded = copy.deepcopy(node)
            del folded.input[:]
            folded.input.extend(f"in{i}" if value is not None else "" for i, value in enumerate(inputs))
            del folded.output[:]
            folded.output.extend(f"out{i}" if out else "" for i, out in enumerate(node.output))
            graph = helper.make_graph(
                [folded],
                "fold",
                [
                    helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                    for k, v in feeds.items()
                ],
                [
                    helper.make_tensor_value_info(f"out{i}", onnx.TensorProto.UNDEFINED, None)
                    for i, out in enumerate(node.output)
                    if out
                ],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset or 17)])
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as exc:  # an op the evaluator cannot fold: treat as run-time
            logger.debug("could not fold %s (%s): %s", node.op_type, node.name, exc)
            return None
        # The folding graph's outputs are exactly the node's named outputs, one result each.
        for out, result in zip([out for out in node.output if out], results, strict=True):
            self._constants[out] = np.asarray(result)
        return self._constants.get(name)

    def shape(self, name: str) -> list[Dim] | None:
        """Static shape of ``name`` from shape inference (None when unknown)."""
        return self.shapes.get(name)

    def elem_type(self, name: str, default: int = onnx.TensorProto.FLOAT) -> int:
        """ONNX element type of ``name`` (``default`` when shape inference did not tell)."""
        return self.types.get(name, default)

    # ---- emitting ----------------------------------------------------------------------------
    def emit(
        self, op_type: str, inputs: list[str], base: str = "", outputs: list[str] | None = None, **attributes: Any
    ) -> str:
        """Emit one node; its (first) output name."""
        outs = outputs or [self.fresh(base or op_type.lower())]
        node = helper.make_node(op_type, inputs, outs, name=self.fresh(f"lowered_{op_type}"), **attributes)
        self.nodes.append(node)
        for out in outs:
            self._producers[out] = node
        return outs[0]

    def identity(self, source: str, target: str) -> None:
        """Bind the replaced node's output ``target`` to ``source`` (an Identity node)."""
        self.emit("Identity", [source], outputs=[target])

    def slice(self, name: str, start: int, end: int, axis: int) -> str:
        """``name[start:end]`` along ``axis`` (opset-10+ Slice with inputs)."""
        return self.emit("Slice", [name, self.ints([start]), self.ints([end]), self.ints([axis])], "slice")

    def squeeze(self, name: str, axis: int) -> str:
        """Squeeze ``axis`` away (axes as input from opset 13, attribute before)."""
        if self.opset >= 13:
            return self.emit("Squeeze", [name, self.ints([axis])], "squeeze")
        return self.emit("Squeeze", [name], "squeeze", axes=[axis])

    def unsqueeze(self, name: str, axis: int) -> str:
        """Insert a size-1 ``axis`` (axes as input from opset 13, attribute before)."""
        if self.opset >= 13:
            return self.emit("Unsqueeze", [name, self.ints([axis])], "unsqueeze")
        return self.emit("Unsqueeze", [name], "unsqueeze", axes=[axis])

    def take(self, name: str, index: int, axis: int) -> str:
        """``name[index]`` along ``axis`` with the axis removed (Slice + Squeeze)."""
        return self.squeeze(self.slice(name, index, index + 1, axis), axis)

    def stack(self, names: list[str], axis: int, target: str | None = None) -> str:
        """The tensors stacked along a new ``axis`` (Unsqueeze each, one Concat)."""
        parts = [self.unsqueeze(name, axis) for name in names]
        return self.emit("Concat", parts, "stack", outputs=[target] if target else None, axis=axis)

    def check_size(self, node: onnx.NodeProto, estimate: int, what: str) -> None:
        """Refuse before emitting when an unrolling would add more than MAX_UNROLLED_NODES nodes."""
        if estimate > MAX_UNROLLED_NODES:
            raise Refusal(
                f"unrolling {what} would add about {estimate} nodes, more than the cap of {MAX_UNROLLED_NODES} "
                "nodes per unrolled construct"
            )

    # ---- subgraphs -----------------------------------------------------------------------------
    def inline(self, graph: onnx.GraphProto, bindings: dict[str, str], tag: str) -> list[str]:
        """Copy the nodes of subgraph ``graph`` into the outer graph.

        ``bindings`` maps the subgraph's input names to outer tensor names. Every tensor the
        subgraph defines (node outputs, initializers, nested graphs' own tensors) gets a fresh
        name; names it reads from the enclosing scope stay. Returns the outer names of the
        subgraph's outputs, in order.
        """
        mapping = dict(bindings)
        for init in graph.initializer:
            renamed = onnx.TensorProto()
            renamed.CopyFrom(init)
            renamed.name = self.fresh(f"{tag}_{init.name}")
            self.initializers.append(renamed)
            mapping[init.name] = renamed.name
            self._constants[renamed.name] = renamed
        if len(graph.sparse_initializer):
            raise Refusal(f"the subgraph {graph.name!r} has sparse initializers")
        for node in graph.node:
            copied = onnx.NodeProto()
            copied.CopyFrom(node)
            for i, name in enumerate(copied.input):
                copied.input[i] = mapping.get(name, name)
            for i, name in enumerate(copied.output):
                if name:
                    mapping[name] = copied.output[i] = self.fresh(f"{tag}_{name}")
            copied.name = self.fresh(f"{tag}_{node.name or node.op_type}")
            for attr in copied.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                    self._rename_nested(sub, mapping, tag)
            self.nodes.append(copied)
            for out in copied.output:
                if out:
                    self._producers[out] = copied
        return [mapping.get(value.name, value.name) for value in graph.output]

    def _rename_nested(self, graph: onnx.GraphProto, outer: dict[str, str], tag: str) -> None:
        """Rename, in place, a nested graph's own tensors (fresh) and its reads of renamed outer ones."""
        mapping = dict(outer)
        for value in graph.input:
            mapping[value.name] = value.name = self.fresh(f"{tag}_{value.name}")
        for init in graph.initializer:
            mapping[init.name] = init.name = self.fresh(f"{tag}_{init.name}")
        for node in graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = mapping.get(name, name)
            for i, name in enumerate(node.output):
                if name:
                    mapping[name] = node.output[i] = self.fresh(f"{tag}_{name}")
            node.name = self.fresh(f"{tag}_{node.name or node.op_type}")
            for attr in node.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                    self._rename_nested(sub, mapping, tag)
        for value in graph.output:
            value.name = mapping.get(value.name, value.name)
        kept = [value for value in graph.value_info if value.name in mapping]
        for value in kept:
            value.name = mapping[value.name]
        del graph.value_info[:]
        graph.value_info.extend(kept)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return infer_shapes_light(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors
        logger.warning("shape inference failed before lowering (%s); static lengths may be unknown", exc)
        return model


def _on_path(graph: onnx.GraphProto, input_name: str, output_name: str, types: dict[str, int]) -> set[int]:
    """Indices of the nodes on the differentiable path from the input to the output.

    On the path: the node reads a tensor depending on the input through float tensors (as the
    builder decides it) and its outputs lead to the output.
    """
    input_type = types.get(input_name, onnx.TensorProto.FLOAT)
    differentiable = {input_name}
    reads_of = [[name for name in node.input if name] + sorted(subgraph_inputs(node)) for node in graph.node]
    for node, reads in zip(graph.node, reads_of, strict=True):
        if registry.is_zero_gradient(node.op_type, node.domain) or not any(name in differentiable for name in reads):
            continue
        differentiable.update(name for name in node.output if name and types.get(name, input_type) in FLOAT_TYPES)
    leads = {output_name}
    path: set[int] = set()
    for index in reversed(range(len(graph.node))):
        node, reads = graph.node[index], reads_of[index]
        if not any(name in leads and name in differentiable for name in node.output):
            continue
        if any(name in differentiable for name in reads):
            path.add(index)
            leads.update(name for name in reads if name in differentiable)
    return path


def _needs_lowering(graph: onnx.GraphProto) -> bool:
    return any(node.op_type in _LOWERINGS and node.domain in DEFAULT_DOMAINS for node in graph.node)


def lower_for_gradients(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """``model`` itself when nothing on the path needs lowering, else a lowered copy.

    Raises UnsupportedOpError (naming the op, the node and why) for a node on the differentiable
    path that cannot be lowered.
    """
    _load()
    if not _needs_lowering(model.graph):
        return model
    lowered = model
    for _ in range(MAX_ROUNDS):
        inferred = _infer(lowered)
        graph = inferred.graph
        types, shapes = declared_types_and_shapes(graph)
        path = _on_path(graph, input_name, output_name, types)
        targets = [
            i for i in sorted(path) if graph.node[i].op_type in _LOWERINGS and graph.node[i].domain in DEFAULT_DOMAINS
        ]
        if not targets:
            break
        lowerer = Lowerer(inferred, shapes, types, _all_names(graph, set()))
        new_nodes: list[onnx.NodeProto] = []
        for index, node in enumerate(graph.node):
            if index not in targets:
                new_nodes.append(node)
                continue
            start = len(lowerer.nodes)
            try:
                _LOWERINGS[node.op_type](lowerer, node)
            except Refusal as reason:
                raise UnsupportedOpError(
                    f"{node.op_type} node {node.name or '(unnamed)'!r} on the differentiable path has no gradient rule "
                    f"and cannot be lowered to ops with rules: {reason}",
                    [node.op_type],
                ) from None
            added = len(lowerer.nodes) - start
            if added > MAX_UNROLLED_NODES:
                raise UnsupportedOpError(
                    f"{node.op_type} node {node.name or '(unnamed)'!r} on the differentiable path has no gradient rule "
                    f"and lowering it would add {added} nodes, more than the cap of {MAX_UNROLLED_NODES} nodes per "
                    "unrolled construct",
                    [node.op_type],
                )
            new_nodes.extend(lowerer.nodes[start:])
            logger.info("lowered %s node %r into %d nodes", node.op_type, node.name, len(lowerer.nodes) - start)
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(lowered)
        del rewritten.graph.node[:]
        rewritten.graph.node.extend(new_nodes)
        rewritten.graph.initializer.extend(lowerer.initializers)
        lowered = rewritten
    return lowered
