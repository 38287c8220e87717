"""One model for a Gram product J J^T u: the VJP gradient half feeding the JVP gradient half.

Why: a Lanczos step on the K x K side (fisher/operator.py, ``FisherGramOperator``) is a VJP run,
its d-long result converted to float64 and back, then a JVP run. For a small model every run
pays a fixed price beside its kernels (Python, the worker-thread hand-off, binding tens of kept
tensors, the d-long copies): the small ViT's 3x224x224 Lanczos spent 13 of its 116 ms a sample
outside ONNX Runtime's kernels. Both halves in one graph make one run per product, and the d-long
vector never leaves ONNX Runtime.

Only for models whose gradient-half weights are small (``MAX_FUSED_WEIGHT_BYTES``): the fused
session holds its own copy of them beside the two halves' sessions (which the audit keeps for
dense Jacobians, the gradient check and the eigenvector), and a large model's runs are its
kernels, which fusing does not shorten.

The JVP half's names get a prefix, except the weights both halves read (the model's own
initializers, equal in both); its tangent input becomes the VJP half's result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import onnx

from fimaudit.autodiff.kept_forward import SplitGradientModel
from fimaudit.autodiff.patch_gram import fold_patch_gram
from fimaudit.graph.onnx_utils import tensor_bytes

#: The JVP half's tensors and nodes, renamed in the fused model.
PREFIX = "fimaudit_jvp/"
#: Weights of the fused model (both halves', shared ones once) above which no fused model is made.
MAX_FUSED_WEIGHT_BYTES = 16 * 2**20


@dataclass(frozen=True)
class FusedGram:
    """The fused model, its weights (added on the wire), and how to feed the JVP half's kept tensors."""

    model: onnx.ModelProto
    weights: tuple[onnx.TensorProto, ...]
    #: The JVP half's kept tensor names -> their names in the fused model.
    jvp_inputs: dict[str, str]
    result: str
    #: Whether a patch embedding's Gram was folded (patch_gram.py): then its first product is checked.
    folded: bool = False


def fuse_gram(
    vjp: SplitGradientModel, jvp: SplitGradientModel, vjp_result: str, jvp_seed: str, jvp_result: str,
    vjp_seed: str | None = None,
) -> FusedGram | None:
    """VJP half then JVP half in one model (seed: the VJP's cotangent), or None where it does not apply.

    With ``vjp_seed`` (the cotangent's name) a patch embedding's Gram is folded where it applies
    (patch_gram.py); without it, or where it does not apply, the halves meet as they are.
    """
    vjp_graph, jvp_graph = vjp.gradient.graph, jvp.gradient.graph
    if any(
        attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in jvp_graph.node
        for attribute in node.attribute
    ):
        return None  # a subgraph's outer-scope reads would need renaming too
    vjp_out = next((value for value in vjp_graph.output if value.name == vjp_result), None)
    jvp_in = next((value for value in jvp_graph.input if value.name == jvp_seed), None)
    jvp_out = next((value for value in jvp_graph.output if value.name == jvp_result), None)
    if vjp_out is None or jvp_in is None or jvp_out is None:
        return None
    if vjp_out.type.tensor_type.elem_type != jvp_in.type.tensor_type.elem_type:
        return None
    vjp_weights = {tensor.name: tensor for tensor in vjp.gradient_weights}
    shared = {
        tensor.name
        for tensor in jvp.gradient_weights
        if tensor.name in vjp_weights and vjp_weights[tensor.name] == tensor
    }
    own = [tensor for tensor in jvp.gradient_weights if tensor.name not in shared]
    if sum(tensor_bytes(tensor) for tensor in [*vjp.gradient_weights, *own]) > MAX_FUSED_WEIGHT_BYTES:
        return None

    def renamed(name: str) -> str:
        if not name or name in shared:
            return name
        return vjp_result if name == jvp_seed else PREFIX + name

    # A model may name its own tensors with the prefix: then a renamed JVP tensor could meet a
    # VJP tensor of the same name, and the fused model would wire them together. No fusion then.
    vjp_names = {name for node in vjp_graph.node for name in [*node.input, *node.output]}
    vjp_names |= {value.name for value in vjp_graph.input} | set(vjp_weights)
    jvp_names = {name for node in jvp_graph.node for name in [*node.input, *node.output]}
    jvp_names |= {value.name for value in jvp_graph.input} | {tensor.name for tensor in own}
    if any(renamed(name) in vjp_names for name in jvp_names if name and name not in shared and name != jvp_seed):
        return None

    fused = onnx.ModelProto()
    fused.CopyFrom(vjp.gradient)
    graph = fused.graph
    for node in jvp_graph.node:
        moved = copy.deepcopy(node)
        moved.name = PREFIX + node.name
        moved.input[:] = [renamed(name) for name in node.input]
        moved.output[:] = [renamed(name) for name in node.output]
        graph.node.append(moved)
    for value in jvp_graph.input:
        if value.name != jvp_seed:
            graph.input.append(value)
            graph.input[-1].name = renamed(value.name)
    del graph.output[:]
    graph.output.append(jvp_out)
    graph.output[0].name = renamed(jvp_result)
    weights = list(vjp.gradient_weights)
    for tensor in own:
        weights.append(copy.deepcopy(tensor))
        weights[-1].name = renamed(tensor.name)
    domains = {opset.domain for opset in fused.opset_import}
    fused.opset_import.extend(opset for opset in jvp.gradient.opset_import if opset.domain not in domains)
    jvp_inputs = {name: renamed(name) for name in jvp.kept}
    sample_dims = tuple(dim.dim_value for dim in vjp_out.type.tensor_type.shape.dim[2:])
    if vjp_seed is not None and sample_dims and all(d > 0 for d in sample_dims):
        folded = fold_patch_gram(fused, {tensor.name: tensor for tensor in weights}, vjp_result, vjp_seed, sample_dims)
        if folded is not None:
            fused, gram = folded
            read = {name for node in fused.graph.node for name in node.input}
            weights = [tensor for tensor in weights if tensor.name in read] + [gram]
            return FusedGram(fused, tuple(weights), jvp_inputs, renamed(jvp_result), folded=True)
    return FusedGram(fused, tuple(weights), jvp_inputs, renamed(jvp_result))
