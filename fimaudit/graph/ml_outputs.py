"""Reading scikit-learn exports (skl2onnx, ``ai.onnx.ml`` ops) for the selection of scores.

- ZipMap: skl2onnx's default probability output is a sequence of maps {label: probability}, which
  no gradient can flow into. ZipMap's own input is the probability tensor [N, K]: the selection
  reads that tensor instead (``zipmap_probabilities``).
- LinearClassifier with post_transform SOFTMAX computes its scores s = X W^T + b inside the op;
  softmax(s) is the output, often followed by a Normalizer L1 (skl2onnx's, the identity on rows
  that already sum to one). The scores are the exact logits: the logits model recomputes them
  with a copy of the node whose post_transform is NONE (``linear_classifier_scores``), instead of
  reading log p, which loses the small probabilities' precision in float32.
- Piecewise-constant ops (Binarizer, tree ensembles) have derivative zero almost everywhere: when
  every path from the input to the scores runs through one, F = 0 almost everywhere
  (``piecewise_constant_note``).
"""

from __future__ import annotations

import onnx
from onnx import helper

from fimaudit.graph.onnx_utils import attribute, infer_shapes_light
from fimaudit.graph.tensors import all_value_infos, is_float_tensor, producers

ML = "ai.onnx.ml"
#: ai.onnx.ml ops whose output is piecewise constant in their input (same list as the rules').
PIECEWISE_CONSTANT = ("Binarizer", "TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")
#: Name of the scores the logits model recomputes from a LinearClassifier (post_transform NONE).
RECOMPUTED_SCORES = "fimaudit_ml_scores"
_TRANSPARENT = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout"}


def is_ml(node: onnx.NodeProto, op_type: str) -> bool:
    """``node`` is the ``ai.onnx.ml`` op ``op_type``."""
    return node.domain == ML and node.op_type == op_type


def zipmap_probabilities(model: onnx.ModelProto, output_name: str) -> tuple[onnx.ValueInfoProto, onnx.NodeProto] | None:
    """(the probability tensor ZipMap reads, the ZipMap) when ``output_name`` is a ZipMap's output."""
    node = producers(model.graph).get(output_name)
    if node is None or not is_ml(node, "ZipMap") or not node.input:
        return None
    source = node.input[0]
    value = all_value_infos(model).get(source)
    if value is None or not is_float_tensor(value):
        try:
            inferred = infer_shapes_light(model)
            value = all_value_infos(inferred).get(source)
        except Exception:  # inference failing leaves the type undeclared; ZipMap reads float
            value = None
    if value is None or not is_float_tensor(value):
        value = helper.make_tensor_value_info(source, onnx.TensorProto.FLOAT, None)
    return value, node


def linear_classifier_scores(model: onnx.ModelProto, tensor: str) -> tuple[onnx.NodeProto, str] | None:
    """(a LinearClassifier computing the scores behind ``tensor``, what it is) or None.

    ``tensor`` qualifies when it is a LinearClassifier's SOFTMAX output (through ops that only
    move values and L1 Normalizers, the identity on probability rows) with one coefficient row
    per class (at least two): softmax of the NONE scores is then exactly that output.
    """
    producer_of = producers(model.graph)
    node = producer_of.get(tensor)
    passed: list[str] = []
    while node is not None and (
        node.op_type in _TRANSPARENT or (is_ml(node, "Normalizer") and attribute(node, "norm") == "L1")
    ):
        passed.append(node.op_type)
        node = producer_of.get(node.input[0]) if node.input else None
    if (
        node is None
        or not is_ml(node, "LinearClassifier")
        or len(node.output) < 2
        or node.output[1] != _walked_from(producer_of, tensor, node)
    ):
        return None
    if attribute(node, "post_transform", "NONE") != "SOFTMAX":
        return None
    labels = _list_length(node, "classlabels_ints") or _list_length(node, "classlabels_strings")
    coefficients = _list_length(node, "coefficients")
    intercepts = _list_length(node, "intercepts")
    if labels < 2 or intercepts not in (0, labels) or coefficients % labels:
        return None
    scores = onnx.NodeProto()
    scores.CopyFrom(node)
    del scores.output[:]
    scores.output.extend(["fimaudit_ml_label", RECOMPUTED_SCORES])
    scores.name = "fimaudit_ml_scores"
    for attr in scores.attribute:
        if attr.name == "post_transform":
            attr.s = b"NONE"
    through = f" and {', '.join(dict.fromkeys(passed))}" if passed else ""
    return scores, (
        f"scores of LinearClassifier {node.name or node.output[1]!r} before its SOFTMAX{through} "
        "(recomputed with post_transform NONE)"
    )


def _list_length(node: onnx.NodeProto, name: str) -> int:
    """The number of entries of list attribute ``name`` (0 when absent)."""
    value = attribute(node, name)
    return len(value) if isinstance(value, list) else 0


def _walked_from(producer_of: dict[str, onnx.NodeProto], tensor: str, target: onnx.NodeProto) -> str | None:
    """The output of ``target`` reached walking back from ``tensor`` along first inputs."""
    name = tensor
    while name in producer_of and producer_of[name] is not target:
        node = producer_of[name]
        name = node.input[0] if node.input else ""
    return name if producer_of.get(name) is target else None


def piecewise_constant_note(model: onnx.ModelProto, input_name: str, output_name: str) -> str:
    """A sentence about piecewise-constant ops between ``input_name`` and ``output_name``, or ''.

    When every path runs through one, F = 0 almost everywhere (the derivative exists and is
    zero except on the ops' thresholds); otherwise those ops contribute nothing to it.
    """
    graph = model.graph
    depends, smooth = {input_name}, {input_name}
    found: list[onnx.NodeProto] = []
    for node in graph.node:
        reads = [name for name in node.input if name]
        if not any(name in depends for name in reads):
            continue
        depends.update(name for name in node.output if name)
        if node.domain == ML and node.op_type in PIECEWISE_CONSTANT:
            found.append(node)
            continue
        if any(name in smooth for name in reads):
            smooth.update(name for name in node.output if name)
    if not found or output_name not in depends:
        return ""
    named = ", ".join(f"{node.op_type} {node.name or node.output[0]!r}" for node in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    if output_name not in smooth:
        return (
            f"F = 0 almost everywhere: every path from {input_name!r} to the scores runs through piecewise-"
            f"constant ops ({named}{more}), whose derivative is zero except on their thresholds, where it "
            "does not exist; lambda_max is 0 wherever it is defined, and finite differences that straddle "
            "a threshold measure a jump, not a derivative"
        )
    return (
        f"piecewise-constant ops on the path ({named}{more}) contribute nothing to F (their derivative is "
        "zero almost everywhere)"
    )
