"""Fold inference BatchNorm scales into the neighbouring weights before bounding.

Why: a chain bound multiplies norms, and ||diag(s) W|| <= ||diag(s)|| ||W|| is often much
smaller (a BatchNorm's largest scale rarely meets the weight's top singular direction).
Both folds below describe the same function, so the bound stays certified; they only change
how the product is grouped.

- Backward (Conv/Gemm/MatMul -> BN, the BN the only reader): the layer's output channels are
  scaled, W' = diag(s) W. This is what exporters do themselves in eval mode.
- Forward (BN -> [ReLU | LeakyReLU] -> Conv/Gemm, each the only reader): ReLU(s x + b) =
  |s| ReLU(sign(s) x + b / |s|) (positive homogeneity), so the BN becomes a 1-Lipschitz
  sign-and-shift and |s| scales the next layer's input channels. Pre-activation DenseNet
  layers (BN-ReLU-Conv) are bounded this way.

Folded tensors get new names, so no probed activation is ever read for a tensor whose value
in the view differs from the model's.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, layer_bound
from fimaudit.graph.onnx_utils import float_attribute, int_attribute
from fimaudit.graph.view import GraphView

FOLDED_OP = "FoldedBatchNorm"
_HOMOGENEOUS = {"Relu", "LeakyRelu"}


def _bn_scale(view: GraphView, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale s, shift) of an inference BatchNorm with constant parameters, else None."""
    if node.op_type != "BatchNormalization" or int_attribute(node, "training_mode", 0):
        return None
    if view.varying_inputs(node) != [0] or len([o for o in node.output if o]) != 1:
        return None
    params = [view.const(name) for name in node.input[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
    scale = gamma / np.sqrt(var + float_attribute(node, "epsilon", 1e-5))
    return scale, beta - scale * mean


def _only_reader(view: GraphView, name: str) -> onnx.NodeProto | None:
    readers = view.consumers.get(name, [])
    if len(readers) != 1 or name in view.outputs:
        return None
    return readers[0]


def _channel_weight(view: GraphView, node: onnx.NodeProto) -> tuple[np.ndarray, str] | None:
    """The constant weight of a Conv/Gemm/MatMul layer and its layout."""
    if view.varying_inputs(node) != [0]:
        return None
    if node.op_type == "Conv":
        weight = view.const(node.input[1])
        return (np.asarray(weight), "conv") if weight is not None else None
    if node.op_type == "Gemm" and not int_attribute(node, "transA", 0):
        weight = view.const(node.input[1])
        if weight is None:
            return None
        return np.asarray(weight), "gemm_t" if int_attribute(node, "transB", 0) else "gemm"
    if node.op_type == "MatMul":
        weight = view.const(node.input[1])
        if weight is None or np.asarray(weight).ndim != 2:
            return None
        return np.asarray(weight), "gemm"
    return None


def _scale_outputs(weight: np.ndarray, layout: str, scale: np.ndarray) -> np.ndarray | None:
    """diag(s) applied to the layer's output channels."""
    w = weight.astype(np.float64)
    if layout == "conv" and w.shape[0] == scale.size:
        return w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    if layout == "gemm_t" and w.shape[0] == scale.size:
        return w * scale[:, None]
    if layout == "gemm" and w.shape[1] == scale.size:
        return w * scale[None, :]
    return None


def _scale_inputs(weight: np.ndarray, layout: str, scale: np.ndarray, groups: int = 1) -> np.ndarray | None:
    """diag(s) applied to the layer's input channels (before it)."""
    w = weight.astype(np.float64)
    if layout == "conv":
        per_group = w.shape[1]
        if per_group * groups != scale.size:
            return None
        out_per_group = w.shape[0] // groups
        factors = np.stack(
            [scale[(o // out_per_group) * per_group : (o // out_per_group + 1) * per_group] for o in range(w.shape[0])]
        )
        return w * factors.reshape(w.shape[0], per_group, *([1] * (w.ndim - 2)))
    if layout == "gemm_t" and w.shape[1] == scale.size:
        return w * scale[None, :]
    if layout == "gemm" and w.shape[0] == scale.size:
        return w * scale[:, None]
    return None


def _replacement(view: GraphView, node: onnx.NodeProto, weight: np.ndarray, tag: str, inputs: list[str] | None = None,
                 outputs: list[str] | None = None) -> onnx.NodeProto:
    name = f"{node.name}/{tag}"
    weight_name = f"{name}/weight"
    view.constants[weight_name] = weight  # float64: the bound is computed on the exact product
    view.shapes[weight_name] = tuple(weight.shape)
    new_inputs = list(inputs if inputs is not None else node.input)
    new_inputs[1] = weight_name
    replaced = helper.make_node(
        node.op_type, new_inputs, list(outputs if outputs is not None else node.output), name=name
    )
    replaced.attribute.extend(node.attribute)
    return replaced


def _fold_backward(view: GraphView, bn: onnx.NodeProto, scale: np.ndarray) -> bool:
    layer = view.producer.get(bn.input[0])
    if layer is None or _only_reader(view, bn.input[0]) is not bn:
        return False
    found = _channel_weight(view, layer)
    if found is None:
        return False
    scaled = _scale_outputs(found[0], found[1], scale)
    if scaled is None:
        return False
    # the bias no longer matters for the bound; the folded layer writes the BN's output
    replaced = _replacement(view, layer, scaled, "bn_folded", inputs=list(layer.input[:2]), outputs=[bn.output[0]])
    view.shapes.setdefault(bn.output[0], view.shapes.get(layer.output[0], ()))
    view.replace([layer, bn], replaced, [layer.name, bn.name])
    view.varying.add(bn.output[0])
    return True


def _fold_forward(view: GraphView, bn: onnx.NodeProto, scale: np.ndarray) -> bool:
    reader = _only_reader(view, bn.output[0])
    if reader is None:
        return False
    activation = None
    if reader.op_type in _HOMOGENEOUS and view.varying_inputs(reader) == [0]:
        if reader.op_type == "LeakyRelu" and abs(float_attribute(reader, "alpha", 0.01)) > 1.0:
            return False
        activation = reader
        reader = _only_reader(view, activation.output[0])
        if reader is None:
            return False
    found = _channel_weight(view, reader)
    if found is None:
        return False
    groups = int_attribute(reader, "group", 1) or 1
    scaled = _scale_inputs(found[0], found[1], np.abs(scale), groups)
    if scaled is None:
        return False
    tag = f"{bn.output[0]}/folded"
    sign = helper.make_node(FOLDED_OP, [bn.input[0]], [tag], name=f"{bn.name}/sign_shift", domain="fimaudit")
    view.elem_types.pop(tag, None)
    nodes = [sign]
    current = tag
    if activation is not None:
        after = f"{activation.output[0]}/folded"
        moved = helper.make_node(activation.op_type, [current], [after], name=f"{activation.name}/folded")
        moved.attribute.extend(activation.attribute)
        nodes.append(moved)
        current = after
    layer = _replacement(view, reader, scaled, "bn_scaled", inputs=[current, *reader.input[1:2]])
    for name, source in ((tag, bn.output[0]), (current, (activation or bn).output[0])):
        if source in view.shapes:
            view.shapes[name] = view.shapes[source]
    view.fused_from[sign.name] = [bn.name]
    removed = [bn] + ([activation] if activation is not None else []) + [reader]
    position = max(i for i, n in enumerate(view.nodes) if n.name == reader.name)
    names = {n.name for n in removed}
    kept = [n for n in view.nodes[:position] if n.name not in names] + nodes + [layer] + view.nodes[position + 1 :]
    view.nodes = kept
    view.fused_from[layer.name] = [reader.name, bn.name]
    if activation is not None:
        view.fused_from[nodes[-1].name] = [activation.name]
    view.varying.update(n for node in nodes for n in node.output)
    view.reindex()
    return True


def fold_batchnorms(view: GraphView) -> list[str]:
    """Fold every foldable BatchNorm (backward first, else forward); returns their names."""
    folded = []
    for bn in [node for node in view.nodes if node.op_type == "BatchNormalization"]:
        found = _bn_scale(view, bn)
        if found is None or bn.input[0] not in view.varying:
            continue
        scale, _shift = found
        if _fold_backward(view, bn, scale) or _fold_forward(view, bn, scale):
            folded.append(bn.name)
    return folded


@layer_bound(FOLDED_OP)
def folded_batchnorm_bound(ctx: NodeContext) -> LayerGain:
    """X -> sign(s) x + b / |s| per channel: 1-Lipschitz (the scale |s| moved into the next layer)."""
    if ctx.varying_inputs() != [0]:
        raise BoundUnavailable(f"{ctx.name!r}: unexpected inputs")
    return LayerGain({0: 1.0}, "BatchNorm scale moved into the next layer's weights", magnitude=math.inf)
