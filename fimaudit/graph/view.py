"""A read-only view of an ONNX graph for pattern matching and bound propagation.

Why a view of our own rather than the raw GraphProto: both consumers (architecture recognition
and the Lipschitz bounds) ask the same questions of every node — which of its inputs depend on
the audited input's *values* ("varying"), which are constants and what they hold, what static
shape a tensor has, who produces and who consumes it — and both want decomposed operators
(LayerNorm, GELU written out by an exporter) seen as the one operator they are. The view answers
those once, with shapes taken at batch size 1 (a bound concerns one sample).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fimaudit.graph.onnx_utils import (
    DEFAULT_DOMAINS,
    LazyConstants,
    infer_shapes_light,
    int_attribute,
    is_constant_node,
    node_constant,
    opset_version,
)
from fimaudit.graph.tensors import FLOAT_TYPES, subgraph_inputs, value_shape

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]

# Ops whose output depends only on the *shape* of their input, never on its values.
SHAPE_ONLY_OPS = {"Shape", "Size", "EyeLike"}
# Size (elements) above which a non-varying tensor is not folded (a weight transpose is fine,
# a huge generated tensor is not worth holding twice).
_FOLD_LIMIT = 1 << 26


def _static(shape: Iterable[object] | None) -> Shape | None:
    if shape is None:
        return None
    dims = tuple(shape)
    static = tuple(int(d) for d in dims if isinstance(d, int) and d >= 0)
    return static if len(static) == len(dims) else None


_SKELETON_LIMIT = 4096  # initializers with more elements travel to shape inference as typed inputs


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its large weights (declared as typed inputs instead).

    Shape inference needs their shapes, not their bytes, and a 500 MB model need not be copied for it.
    """
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                                      producer_name=model.producer_name, functions=model.functions))
    graph = skeleton.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    declared = {value.name for value in model.graph.input}
    graph.input.extend(model.graph.input)
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= _SKELETON_LIMIT and init.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton


def with_batch_one(model: onnx.ModelProto, input_name: str, sample_shape: Shape | None = None) -> onnx.ModelProto:
    """A weightless copy of ``model`` whose input ``input_name`` has batch 1 (and the given sample shape).

    The copy is shape-inferred.

    Shape inference then resolves most intermediate shapes to numbers, which the convolution,
    pooling and broadcasting bounds need.
    """
    fixed = _skeleton(model)
    for value in fixed.graph.input:
        if value.name != input_name or not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        dims = list(shape.dim)
        wanted = [1, *sample_shape] if sample_shape is not None else None
        if wanted is not None and len(wanted) != len(dims):
            del shape.dim[:]
            for size in wanted:
                shape.dim.add().dim_value = int(size)
            continue
        for index, dim in enumerate(dims):
            if index == 0:
                dim.Clear()
                dim.dim_value = 1
            elif wanted is not None:
                dim.Clear()
                dim.dim_value = int(wanted[index])
    try:
        return infer_shapes_light(fixed, data_prop=True)
    except Exception as exc:  # shape inference is advisory here, as in the loader
        logger.info("shape inference at batch 1 failed (%s); shapes come from a probe run", exc)
        return fixed


@dataclass
class GraphView:
    """Nodes in topological order with constants, static shapes and the varying set.

    ``fused_from`` maps the name of a node that stands for a recognised decomposed operator
    (see fusion.py) to the names of the exporter's nodes it replaces.
    """

    nodes: list[onnx.NodeProto]
    input_name: str
    outputs: list[str]
    constants: MutableMapping[str, np.ndarray]
    elem_types: dict[str, int]
    shapes: dict[str, Shape]
    opset: int = 17
    varying: set[str] = field(default_factory=set)
    fused_from: dict[str, list[str]] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    external_inputs: set[str] = field(default_factory=set)  # other graph inputs, held fixed (compute_varying)

    def __post_init__(self) -> None:
        self._positions: tuple[list[onnx.NodeProto], dict[str, int]] | None = None
        self.reindex()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model(
        cls,
        model: onnx.ModelProto,
        input_name: str | None = None,
        outputs: list[str] | None = None,
        sample_shape: Shape | None = None,
        fold: bool = True,
    ) -> GraphView:
        """Build the view of ``model`` as seen from ``input_name`` (default: first real input)."""
        graph = model.graph
        initializer_names = {init.name for init in graph.initializer}
        real_inputs = [value.name for value in graph.input if value.name not in initializer_names]
        if input_name is None:
            if not real_inputs:
                raise ValueError("the model has no input")
            input_name = real_inputs[0]
        inferred = with_batch_one(model, input_name, sample_shape)
        constants = LazyConstants.of_graph(graph, constant_nodes=False)
        elem_types: dict[str, int] = {init.name: init.data_type for init in graph.initializer}
        shapes: dict[str, Shape] = {}
        for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            if value.type.HasField("tensor_type"):
                elem_types[value.name] = value.type.tensor_type.elem_type
                static = _static(value_shape(value))
                if static is not None:
                    shapes[value.name] = static
        nodes: list[onnx.NodeProto] = []
        used_names: set[str] = set()
        for index, original in enumerate(graph.node):
            unique = original.name and original.name not in used_names
            node = copy.copy(original) if unique else _renamed(original, index)
            used_names.add(node.name)
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                constant = node_constant(node) if is_constant_node(node) else None
                if constant is not None:
                    constants[node.output[0]] = constant
                    elem_types.setdefault(node.output[0], int(helper.np_dtype_to_tensor_dtype(constant.dtype)))
                continue
            nodes.append(node)
        for init in graph.initializer:
            shapes.setdefault(init.name, tuple(int(d) for d in init.dims))
        for name in constants:
            if name not in shapes:
                shapes[name] = tuple(int(d) for d in constants[name].shape)
        view = cls(
            nodes=nodes,
            input_name=input_name,
            outputs=list(outputs) if outputs is not None else [value.name for value in graph.output],
            constants=constants,
            elem_types=elem_types,
            shapes=shapes,
            opset=opset_version(model) or 17,
        )
        other_inputs = [name for name in real_inputs if name != input_name]
        view.compute_varying(other_inputs)
        if fold:
            view.fold_constants()
        return view

    def reindex(self) -> None:
        """Rebuild producer/consumer maps after the node list changed."""
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def compute_varying(self, other_inputs: Iterable[str] = ()) -> None:
        """Mark tensors whose values depend on the audited input's values.

        Other graph inputs (masks, scalars) are held fixed by the audit, so they count as
        non-varying but also as non-constant (their values are unknown to the view).
        """
        varying = {self.input_name}
        for node in self.nodes:
            if node.op_type in SHAPE_ONLY_OPS:
                continue
            if any(name in varying for name in node.input if name) or _subgraph_reads(node, varying):
                varying.update(out for out in node.output if out)
        self.varying = varying
        self.external_inputs = set(other_inputs)

    def fold_constants(self) -> None:
        """Evaluate non-varying nodes whose inputs are all known, so that rules see them as constants.

        Such nodes are weights moved by Transpose and shape arithmetic on static shapes, say.
        """
        from onnx.reference import ReferenceEvaluator

        for node in self.nodes:
            outputs = [out for out in node.output if out]
            if not outputs or any(out in self.varying or out in self.constants for out in outputs):
                continue
            if node.op_type in SHAPE_ONLY_OPS:
                source = node.input[0]
                shape = self.shapes.get(source)
                if shape is None:
                    continue
                if node.op_type == "Shape":
                    start = int_attribute(node, "start", 0)
                    end = int_attribute(node, "end", None)
                    dims = list(shape)[start:end]
                    self.constants[outputs[0]] = np.array(dims, dtype=np.int64)
                elif node.op_type == "Size":
                    self.constants[outputs[0]] = np.array(int(np.prod(shape)), dtype=np.int64)
                continue
            if node.domain not in DEFAULT_DOMAINS or _has_subgraph(node):
                continue
            inputs = [name for name in node.input]
            if any(name and name not in self.constants for name in inputs):
                continue
            try:
                single = _single_node_model(node, inputs, self.constants, self.opset)
                results = ReferenceEvaluator(single).run(None, {})
            except Exception as exc:  # unsupported by the reference runtime: leave it unfolded
                logger.debug("cannot fold %s (%s): %s", node.name, node.op_type, exc)
                continue
            for name, value in zip(outputs, results, strict=True):
                array = np.asarray(value)
                if array.size <= _FOLD_LIMIT:
                    self.constants[name] = array
                    self.shapes.setdefault(name, tuple(int(d) for d in array.shape))

    # ------------------------------------------------------------------ questions

    def is_constant(self, name: str) -> bool:
        """The tensor's value is known without running the model."""
        return name in self.constants

    def is_varying(self, name: str) -> bool:
        """The tensor depends on the audited input's values."""
        return name in self.varying

    def is_float(self, name: str) -> bool:
        """The tensor is floating point (unknown types count as float: the common case for activations)."""
        elem = self.elem_types.get(name)
        if elem is None:
            return True  # unknown: assume a float activation (the common case)
        return elem in FLOAT_TYPES

    def shape(self, name: str) -> Shape | None:
        """The tensor's static shape at batch 1, or None when unknown."""
        return self.shapes.get(name)

    def const(self, name: str) -> np.ndarray | None:
        """The tensor's constant value, or None when it is computed at run time."""
        return self.constants.get(name)

    def varying_inputs(self, node: onnx.NodeProto) -> list[int]:
        """Indices of the node's inputs that depend on the audited input."""
        return [i for i, name in enumerate(node.input) if name and name in self.varying]

    def scalar_constant(self, name: str) -> float | None:
        """The value of a constant holding a single number, else None."""
        value = self.constants.get(name)
        if value is None or value.size != 1:
            return None
        return float(np.asarray(value, dtype=np.float64).reshape(()))

    def ancestors_within(self, target: str, stop: set[str]) -> list[onnx.NodeProto]:
        """Nodes on varying paths into ``target`` that do not reach back past ``stop`` tensors."""
        seen: set[str] = set()
        found: list[onnx.NodeProto] = []
        found_names: set[str] = set()
        stack = [target]
        while stack:
            name = stack.pop()
            if name in seen or name in stop:
                continue
            seen.add(name)
            node = self.producer.get(name)
            if node is None or name not in self.varying:
                continue
            if node.name not in found_names:
                found_names.add(node.name)
                found.append(node)
            stack.extend(i for i in node.input if i)
        order = self.positions()
        return sorted(found, key=lambda node: order.get(node.name, 0))

    def positions(self) -> dict[str, int]:
        """Each node's index in ``nodes`` by name (built once per node list, not per question)."""
        cached = self._positions
        if cached is None or cached[0] is not self.nodes or len(cached[1]) != len(self.nodes):
            cached = self._positions = (self.nodes, {node.name: index for index, node in enumerate(self.nodes)})
        return cached[1]

    def original_names(self, node: onnx.NodeProto) -> list[str]:
        """The exporter's node names behind ``node`` (itself, or the nodes a fusion replaced)."""
        return self.fused_from.get(node.name, [node.name])

    def replace(self, removed: list[onnx.NodeProto], fused: onnx.NodeProto, originals: list[str]) -> None:
        """Replace ``removed`` nodes by ``fused`` (placed where the last removed node was)."""
        self.replace_many([(removed, fused, originals)])

    def replace_many(self, replacements: list[tuple[list[onnx.NodeProto], onnx.NodeProto, list[str]]]) -> None:
        """Several disjoint ``replace`` calls in one pass over the nodes and one reindex.

        One pass per fusion made fusing quadratic in the node count (a hostile graph of 20k
        decomposed GELUs); fusions collect their replacements and apply them together.
        """
        if not replacements:
            return
        position = {node.name: index for index, node in enumerate(self.nodes)}
        substitute: dict[str, onnx.NodeProto | None] = {}
        for removed, fused, originals in replacements:
            last = max(removed, key=lambda node: position[node.name])
            for node in removed:
                substitute[node.name] = None
            substitute[last.name] = fused
            names: list[str] = []
            for original in originals:
                names.extend(self.fused_from.pop(original, [original]))
            self.fused_from[fused.name] = names
        nodes = []
        for node in self.nodes:
            if node.name not in substitute:
                nodes.append(node)
            elif (replacement := substitute[node.name]) is not None:
                nodes.append(replacement)
        self.nodes = nodes
        self.reindex()


def _renamed(node: onnx.NodeProto, index: int) -> onnx.NodeProto:
    renamed = copy.copy(node)
    renamed.name = f"{node.op_type}_{index}" if not node.name else f"{node.name}_{index}"
    return renamed


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute)


def _subgraph_reads(node: onnx.NodeProto, names: set[str]) -> bool:
    return bool(subgraph_inputs(node) & names) if _has_subgraph(node) else False


def _single_node_model(
    node: onnx.NodeProto, inputs: list[str], constants: Mapping[str, np.ndarray], opset: int
) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(np.asarray(constants[name]), name) for name in inputs if name]
    outputs = [helper.make_tensor_value_info(out, onnx.TensorProto.UNDEFINED, None) for out in node.output if out]
    graph = helper.make_graph([node], "fold", [], outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
