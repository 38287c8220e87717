"""A gradient model split in two: its forward pass (run once per sample) and its gradient nodes.

Why: a matrix-free estimator asks for tens of products J v and J^T u at one sample (Lanczos at
K = 1000 takes about 22 of each), and every run of a combined gradient model (``build.py``: the
forward graph plus the rules' nodes) recomputes the forward pass its gradient nodes read from.
For a convolutional network a gradient run for input gradients costs about one forward pass
beyond its own forward, so half of every product was that recomputation (ResNet-18 at 3x224x224:
the VJP run 219 ms, the JVP run 336 ms, against PyTorch, which keeps one forward per sample).
Split, the forward model returns the logits and every forward tensor a gradient node reads
(ReLU masks, pooling inputs, normalisation statistics; the weights stay initializers of the
gradient model), and the gradient model takes those tensors as inputs beside the seed.

The split is read off the assembled model itself, so it holds for any rule's nodes: a node is on
the gradient side when it depends on the seed, or depends on no data input at all and feeds the
gradient side (constants the rules made); every other node the logits or those reads need is on
the forward side. Nothing is approximated: the same nodes compute the same values, in two runs.
A tensor the split cannot declare (no element type even after shape inference, or integer shape
arithmetic of unknown rank) is recomputed on the gradient side from its own inputs; a model whose
logits or result have no type is not split (``None``): the caller keeps the combined model.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from fimaudit.graph.onnx_utils import infer_shapes_light, ints_attribute, weights_as_inputs
from fimaudit.graph.tensors import all_value_infos, node_indices_needed_for, subgraph_inputs


@dataclass(frozen=True)
class SplitGradientModel:
    """The two halves of one gradient model, each without its initializers (held by reference).

    Why by reference: the halves exist to be serialised for ONNX Runtime once each; copying the
    weights into them first cost VGG-11 4.3 s of the 19.6 s its gradient source took to build
    (515 MB twice). ``runtime.create_session(half, weights=...)`` hands them to ONNX Runtime
    beside the half instead (session_weights.py: small ones serialised after it, large ones in
    memory); ``complete`` gives a whole model where one is needed (tests, debugging).
    """

    #: data inputs -> (logits, *kept): the forward pass and the tensors the gradient side reads.
    forward: onnx.ModelProto
    #: (seed, *kept) -> result: the gradient nodes alone.
    gradient: onnx.ModelProto
    #: Names of the tensors handed from the forward half to the gradient half, in output order.
    kept: tuple[str, ...]
    #: The initializers each half reads (messages of the assembled model, not copies).
    forward_weights: tuple[onnx.TensorProto, ...] = ()
    gradient_weights: tuple[onnx.TensorProto, ...] = ()

    def complete(self, half: str) -> onnx.ModelProto:
        """``forward`` or ``gradient`` with its initializers copied in: a whole model."""
        model = onnx.ModelProto()
        model.CopyFrom(getattr(self, half))
        model.graph.initializer.extend(getattr(self, f"{half}_weights"))
        return model


def _reads(node: onnx.NodeProto, known: set[str]) -> list[str]:
    """Tensors of the enclosing graph a node reads (its subgraphs' outer reads included)."""
    names = [name for name in node.input if name]
    names += sorted(name for name in subgraph_inputs(node) if name in known)
    return names


def _depending_on(graph: onnx.GraphProto, sources: set[str], known: set[str]) -> set[int]:
    """Indices of nodes that depend (transitively) on any of ``sources``."""
    reached = set(sources)
    found: set[int] = set()
    for index, node in enumerate(graph.node):
        if any(name in reached for name in _reads(node, known)):
            found.add(index)
            reached.update(name for name in node.output if name)
    return found


def _operand_transposes(graph: onnx.GraphProto, forward_only: set[int], on_seed: set[int], known: set[str]) -> set[int]:
    """Forward-only Transposes of the last two axes that only gradient-side MatMuls read.

    Why they go to the gradient side: a MatMul rule multiplies the cotangent by the transpose of
    its forward operand (g B^T, A^T g). On the forward side that Transpose is a copy made every
    forward run and handed over as one more tensor (ViT at 3x32x32: nine per sample, a sixth of
    its forward half); beside its MatMul in one graph ONNX Runtime folds it into the product
    (FusedMatMul with transA/transB), so it costs nothing, on any number of gradient runs.
    Other Transposes stay: moved, they would run on every gradient run instead of once.
    """
    outputs = {value.name for value in graph.output}
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in _reads(node, known):
            readers.setdefault(name, []).append(index)
    found = set()
    for index in forward_only:
        node = graph.node[index]
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        perm = ints_attribute(node, "perm") or []
        rank = len(perm)
        if rank < 2 or perm != [*range(rank - 2), rank - 1, rank - 2]:
            continue
        users = readers.get(node.output[0], [])
        matmuls = all(graph.node[user].op_type == "MatMul" and graph.node[user].domain in ("", "ai.onnx")
                      for user in users)
        if users and matmuls and set(users) <= on_seed and node.output[0] not in outputs:
            found.add(index)
    return found


def _typed(name: str, infos: dict[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto | None:
    """A copy of the tensor's value info when its element type is known, else None."""
    value = infos.get(name)
    if value is None or not value.type.tensor_type.elem_type:
        return None
    typed = onnx.ValueInfoProto()
    typed.CopyFrom(value)
    return typed


def _shapeless_integers(name: str, infos: dict[str, onnx.ValueInfoProto]) -> bool:
    """An integer tensor of unknown rank: shape arithmetic, cheap to recompute, awkward to declare."""
    value = infos.get(name)
    if value is None:
        return False
    tensor = value.type.tensor_type
    return tensor.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and not tensor.HasField("shape")


def _initializers_read(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[onnx.TensorProto]:
    """The initializers of ``model`` the nodes read (references to its messages, in name order)."""
    known_initializers = {init.name: init for init in model.graph.initializer}
    produced = {name for node in nodes for name in node.output}
    read = {read for node in nodes for read in _reads(node, set(known_initializers))}
    return [known_initializers[read] for read in sorted(read - produced) if read in known_initializers]


def _model_like(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    name: str,
    initializers: list[onnx.TensorProto] | tuple[onnx.TensorProto, ...] = (),
) -> onnx.ModelProto:
    """A model with the given nodes (and ``initializers``), the original's opsets and IR.

    Built in place: helper.make_model would copy the graph, its weights included, a second time.
    """
    split = onnx.ModelProto()
    split.ir_version = model.ir_version
    split.opset_import.extend(model.opset_import)
    graph = split.graph
    graph.name = name
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    graph.initializer.extend(initializers)
    return split


def _with_inferred_types(
    model: onnx.ModelProto,
    forward_nodes: list[onnx.NodeProto],
    data_inputs: list[onnx.ValueInfoProto],
    wanted: list[str],
    infos: dict[str, onnx.ValueInfoProto],
) -> dict[str, onnx.ValueInfoProto]:
    """``infos`` completed by shape inference over the forward half (types and shapes it finds)."""
    data_names = {value.name for value in data_inputs}
    outputs = [helper.make_empty_tensor_value_info(name) for name in wanted if name not in data_names]
    # Large initializers as typed inputs: shape inference reads their types, not their bytes.
    constants, standing_in = weights_as_inputs(_initializers_read(model, forward_nodes))
    probe = _model_like(model, forward_nodes, [*data_inputs, *standing_in], outputs, "fimaudit_kept_forward_probe",
                        constants)
    try:
        inferred = infer_shapes_light(probe, data_prop=True)
    except Exception:  # onnx raises InferenceError and plain RuntimeErrors
        return infos
    found = [*inferred.graph.value_info, *inferred.graph.output]
    return {**infos, **{value.name: value for value in found if value.type.tensor_type.elem_type}}


def split_gradient_model(
    model: onnx.ModelProto, seed: str, result: str, logits: str
) -> SplitGradientModel | None:
    """The forward half and the gradient half of an assembled gradient model (see the module doc).

    ``seed`` is the cotangent or tangent input, ``result`` the gradient output, ``logits`` the
    forward output. None when the logits' or the result's type is unknown.
    """
    graph = model.graph
    known = {node_output for node in graph.node for node_output in node.output if node_output}
    known |= {value.name for value in graph.input} | {init.name for init in graph.initializer}
    initializer_names = {init.name for init in graph.initializer}
    data_inputs = [value for value in graph.input if value.name != seed and value.name not in initializer_names]
    data_names = {value.name for value in data_inputs}
    on_seed = _depending_on(graph, {seed}, known)
    forward_only = _depending_on(graph, data_names, known) - on_seed
    forward_only -= _operand_transposes(graph, forward_only, on_seed, known)
    everything = set(range(len(graph.node)))
    infos = all_value_infos(model)
    inferred = False
    while True:
        gradient_side = node_indices_needed_for(graph, [result], everything - forward_only)
        reads = {name for index in gradient_side for name in _reads(graph.node[index], known)}
        made = {name for index in gradient_side for name in graph.node[index].output}
        kept = sorted(name for name in reads - made - initializer_names - {seed} if name in known)
        forward_side = node_indices_needed_for(graph, [logits, *kept], everything - on_seed)
        forward_nodes = [graph.node[index] for index in sorted(forward_side)]
        untyped = [name for name in kept if _typed(name, infos) is None]
        if untyped and not inferred:
            infos = _with_inferred_types(model, forward_nodes, data_inputs, [logits, *kept], infos)
            inferred = True
            continue
        # A tensor no inference types (an op from an unknown domain), or integer shape arithmetic
        # without a static shape: recompute it on the gradient side from what its inputs are.
        recompute = set(untyped) | {name for name in kept if _shapeless_integers(name, infos)}
        movable = {index for index in forward_only for name in graph.node[index].output if name in recompute}
        if not movable:
            break
        forward_only -= movable
    typed_logits, typed_result = _typed(logits, infos), _typed(result, infos)
    handed = [value for name in kept if (value := _typed(name, infos)) is not None]
    if untyped or typed_logits is None or typed_result is None or len(handed) != len(kept):
        return None
    gradient_nodes = [graph.node[index] for index in sorted(gradient_side)]
    forward_outputs = [typed_logits, *(value for value in handed if value.name not in data_names | {logits})]
    forward = _model_like(model, forward_nodes, data_inputs, forward_outputs, "fimaudit_kept_forward")
    seed_input = next(value for value in graph.input if value.name == seed)
    gradient = _model_like(model, gradient_nodes, [seed_input, *handed], [typed_result], "fimaudit_gradient_only")
    return SplitGradientModel(forward, gradient, tuple(kept), tuple(_initializers_read(model, forward_nodes)),
                              tuple(_initializers_read(model, gradient_nodes)))
