"""Choose the input to differentiate and the class-score output, and expose logits.

Every downstream stage (finite differences, gradient graphs, estimators) works on one *logits
model*: the original graph cut so that its single output ``fimaudit_logits`` has shape [batch, K]
and softmax(logits) is the model's predictive distribution. Why logits and not probabilities:
the Fisher form needs diag(p) - p p^T, which loses all precision in float32 when computed from
probabilities near 1, while logits keep it (see fisher/covariance.py).

- logits output: used as is.
- softmax output: the Softmax node's input is the logits (the graph is cut before it).
- sigmoid output q (binary): the pre-sigmoid score s becomes the two-class logits [0, s],
  whose softmax is (1 - q, q); the Bernoulli Fisher q (1 - q) g g^T follows exactly.
- probabilities with no recognisable Softmax (e.g. normalised by a division): log p, computed
  inside the graph, is used as the logits (softmax(log p) = p).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from fimaudit.errors import InputError, ModelError
from fimaudit.graph.loader import LoadedModel
from fimaudit.graph.tensors import (
    Dim,
    all_value_infos,
    dtype_name,
    graph_inputs,
    is_float_tensor,
    is_tensor,
    nodes_needed_for,
    producers,
    subgraph_inputs,
    type_description,
    value_shape,
)

logger = logging.getLogger(__name__)

LOGITS = "fimaudit_logits"
OUTPUT_KINDS = ("logits", "probabilities", "sigmoid")

# Ops that only move or relabel values between the score and the model output.
_TRANSPARENT = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Dropout"}


@dataclass
class Selection:
    """What fimaudit differentiates, and how the model's output becomes logits."""

    input_name: str
    input_shape: list[Dim]
    input_dtype: str
    output_name: str
    output_kind: str
    logits_source: str
    logits_transform: str
    fixed_batch: int | None
    extra_inputs: list[str] = field(default_factory=list)
    output_shape: list[Dim] | None = None

    @property
    def sample_shape(self) -> list[Dim]:
        """Shape of one sample (the input shape without its batch axis)."""
        return self.input_shape[1:]


def _choose_input(model: onnx.ModelProto, requested: str | None) -> tuple[onnx.ValueInfoProto, list[str]]:
    inputs = graph_inputs(model.graph)
    names = [value.name for value in inputs]
    if requested is not None:
        matches = [value for value in inputs if value.name == requested]
        if not matches:
            raise InputError(f"--input {requested!r} is not a model input; inputs are: {', '.join(names)}")
        chosen = matches[0]
        if not is_float_tensor(chosen):
            raise InputError(
                f"input {requested!r} is {type_description(chosen)}, not a float tensor: it is not "
                f"differentiable{_integer_input_note(_readers(model.graph), chosen.name)}"
            )
    else:
        floats = [value for value in inputs if is_float_tensor(value)]
        if not floats:
            readers = _readers(model.graph)
            described = "; ".join(
                f"{v.name} {type_description(v)}{_integer_input_note(readers, v.name)}" for v in inputs
            ) or "none"
            raise ModelError(
                f"the model has no float input to differentiate (inputs: {described}); integer "
                "inputs such as token ids are not differentiable"
            )
        # The largest float input is the data; small ones are usually masks or scalars.
        chosen = max(floats, key=lambda v: np.prod([d if isinstance(d, int) else 1 << 20 for d in value_shape(v) or [1]]))
    extra = [name for name in names if name != chosen.name]
    return chosen, extra


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order (built once, asked many times)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                readers.setdefault(name, []).append(node)
    return readers


def _integer_input_note(readers: dict[str, list[onnx.NodeProto]], name: str) -> str:
    """', it indexes the embedding Gather 'embed' (table 'emb.weight')' when ``name`` feeds one.

    Token ids reach the network through an embedding lookup; the embedding's output is the first
    float tensor, and naming it tells the user what a differentiable audit would start from.
    ``readers`` (``_readers``) makes the walk linear: a scan of every node per tensor on the way
    took minutes on a long chain of Casts and Reshapes.
    """
    passthrough = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
    frontier, seen = [name], set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in readers.get(current, []):
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == current:
                return (
                    f", it indexes the embedding Gather {node.name or node.output[0]!r} (table {node.input[0]!r}); "
                    "audit it with --wrt embeddings"
                )
            if node.op_type in passthrough and node.input and node.input[0] == current:
                frontier.extend(out for out in node.output if out and out not in seen)
    return ""


QUANTIZING_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
QUANTIZED_OPS = QUANTIZING_OPS | {
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearSoftmax", "QGemm",
}


def quantized_nodes_on_path(model: onnx.ModelProto, input_name: str) -> list[onnx.NodeProto]:
    """Quantized nodes computing on values derived from ``input_name`` (not on stored weights).

    Such a model rounds its activations to integers: its outputs are piecewise constant in the
    input, so it has no gradient, and finite differences see the quantizer's steps.
    """
    derived = {input_name}
    found: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if any(name in derived for name in node.input) or subgraph_inputs(node) & derived:
            derived.update(out for out in node.output if out)
            if node.op_type in QUANTIZED_OPS:
                found.append(node)
    return found


def _choose_output(model: onnx.ModelProto, requested: str | None) -> onnx.ValueInfoProto:
    outputs = list(model.graph.output)
    if requested is not None:
        matches = [value for value in outputs if value.name == requested]
        if not matches:
            names = ", ".join(value.name for value in outputs)
            raise InputError(f"--output {requested!r} is not a model output; outputs are: {names}")
        chosen = matches[0]
        if not is_float_tensor(chosen):
            raise InputError(
                f"output {requested!r} is {type_description(chosen)}, not a float tensor of class "
                "scores (for skl2onnx models convert with options={'zipmap': False})"
            )
        return chosen
    candidates = [value for value in outputs if is_float_tensor(value)]
    if not candidates:
        described = ", ".join(f"{v.name} {type_description(v)}" for v in outputs)
        raise ModelError(
            f"no output is a float tensor of class scores (outputs: {described}); a ZipMap "
            "output (skl2onnx's default) must be converted with options={'zipmap': False}"
        )
    producer_of = producers(model.graph)

    def preference(value: onnx.ValueInfoProto) -> tuple[int, int]:
        node = _score_producer(producer_of, value.name)
        ends_in_head = int(node is not None and node.op_type in ("Softmax", "LogSoftmax", "Sigmoid"))
        named_like_scores = int(any(key in value.name.lower() for key in ("logit", "prob", "score", "output")))
        return (ends_in_head, named_like_scores)

    # Stable: among equally good candidates the first output wins.
    return max(candidates, key=preference)


def _score_producer(producer_of: dict[str, onnx.NodeProto], name: str) -> onnx.NodeProto | None:
    """The first non-transparent node behind ``name``."""
    node = producer_of.get(name)
    while node is not None and node.op_type in _TRANSPARENT and node.input:
        node = producer_of.get(node.input[0])
    return node


def _classify_output(
    model: onnx.ModelProto, output: onnx.ValueInfoProto
) -> tuple[str, str, str]:
    """Return (kind, logits source tensor, transform description)."""
    producer_of = producers(model.graph)
    node = _score_producer(producer_of, output.name)
    shape = value_shape(output) or []
    width = shape[-1] if shape else None
    if node is not None and node.op_type == "Softmax":
        return "probabilities", node.input[0], "input of the final Softmax"
    if node is not None and node.op_type == "LogSoftmax":
        return "logits", node.input[0], "input of the final LogSoftmax"
    if node is not None and node.op_type == "Sigmoid" and (width in (1, None) or len(shape) == 1):
        return "sigmoid", node.input[0], "two-class logits [0, s] from the pre-sigmoid score s"
    if width == 1 or len(shape) == 1:
        raise ModelError(
            f"output {output.name!r} has a single score per sample and does not end in a Sigmoid; "
            "fimaudit cannot tell a probability from a logit there"
        )
    return "logits", output.name, "model output used as logits"


def select_input_output(
    loaded: LoadedModel, input_name: str | None = None, output_name: str | None = None
) -> Selection:
    """Pick the input and output to audit and work out how to obtain logits."""
    model = loaded.proto
    chosen_input, extra = _choose_input(model, input_name)
    chosen_output = _choose_output(model, output_name)
    kind, source, transform = _classify_output(model, chosen_output)
    shape = value_shape(chosen_input) or []
    if not shape:
        raise ModelError(f"input {chosen_input.name!r} has no declared shape; fimaudit needs its rank")
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    return Selection(
        input_name=chosen_input.name,
        input_shape=shape,
        input_dtype=dtype_name(chosen_input.type.tensor_type.elem_type),
        output_name=chosen_output.name,
        output_kind=kind,
        logits_source=source,
        logits_transform=transform,
        fixed_batch=fixed_batch,
        extra_inputs=extra,
        output_shape=value_shape(chosen_output),
    )


def as_log_probabilities(selection: Selection) -> Selection:
    """The same selection, reading probabilities found only at run time through log p."""
    changed = copy.copy(selection)
    changed.output_kind = "probabilities"
    changed.logits_source = selection.output_name
    changed.logits_transform = "log of the output probabilities (no final Softmax found)"
    return changed


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True when every row is non-negative and sums to one: a softmax computed another way."""
    rows = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    return bool(rows.shape[1] > 1 and np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-4))


def build_logits_model(loaded: LoadedModel, selection: Selection) -> onnx.ModelProto:
    """A copy of the model whose only output is ``fimaudit_logits`` [batch, K].

    Nodes not needed for the logits are dropped so that ONNX Runtime does no wasted work.
    """
    model = copy.deepcopy(loaded.proto)
    graph = model.graph
    source = selection.logits_source
    infos = all_value_infos(model)
    elem_type = infos[source].type.tensor_type.elem_type if source in infos and is_tensor(infos[source]) else onnx.TensorProto.FLOAT
    new_nodes: list[onnx.NodeProto] = []
    current = source
    if selection.output_kind == "probabilities" and source == selection.output_name:
        tiny = np.finfo(np.float32).tiny
        floor = helper.make_tensor("fimaudit_tiny", elem_type, [], [float(tiny)])
        graph.initializer.append(floor)
        new_nodes.append(helper.make_node("Max", [current, "fimaudit_tiny"], ["fimaudit_clamped"], name="fimaudit_clamp"))
        new_nodes.append(helper.make_node("Log", ["fimaudit_clamped"], ["fimaudit_logp"], name="fimaudit_log"))
        current = "fimaudit_logp"
    new_nodes.append(helper.make_node("Flatten", [current], ["fimaudit_flat"], name="fimaudit_flatten", axis=1))
    current = "fimaudit_flat"
    if selection.output_kind == "sigmoid":
        zero = helper.make_tensor("fimaudit_zero", elem_type, [], [0.0])
        graph.initializer.append(zero)
        new_nodes.append(helper.make_node("Mul", [current, "fimaudit_zero"], ["fimaudit_zeros"], name="fimaudit_zeros"))
        new_nodes.append(helper.make_node("Concat", ["fimaudit_zeros", current], ["fimaudit_pair"], name="fimaudit_pair", axis=1))
        current = "fimaudit_pair"
    new_nodes.append(helper.make_node("Identity", [current], [LOGITS], name="fimaudit_logits"))
    graph.node.extend(new_nodes)
    kept = nodes_needed_for(graph, [LOGITS])
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    for node in kept:
        used |= subgraph_inputs(node)
    kept_inits = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(LOGITS, elem_type, None))
    needed_inputs = [value for value in graph.input if value.name in used or value.name == selection.input_name]
    del graph.input[:]
    graph.input.extend(needed_inputs)
    return model
