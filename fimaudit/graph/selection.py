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
- skl2onnx's ZipMap output (a sequence of maps): ZipMap's input, the probability tensor, is read
  instead; a LinearClassifier's SOFTMAX probabilities become its scores (graph/ml_outputs.py).
- a mean over length-1 axes of a Sigmoid (silero-vad's head) is a sigmoid probability.
- ``--output-kind`` (logits, probabilities, sigmoid) says what the output is when the graph
  cannot tell; a kind that does not fit the output's width is an InputError.
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
from fimaudit.graph.ml_outputs import linear_classifier_scores, zipmap_probabilities
from fimaudit.graph.onnx_utils import constant_value, infer_shapes_light, ints_attribute
from fimaudit.graph.tensors import (
    Dim,
    all_value_infos,
    dtype_name,
    graph_inputs,
    is_float_tensor,
    is_tensor,
    nodes_needed_for,
    producers,
    readers_of,
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
    #: Nodes the logits model adds to compute ``logits_source`` (a LinearClassifier's raw scores).
    extra_nodes: list[onnx.NodeProto] = field(default_factory=list)
    #: Sigmoid kind whose source is the probability q itself (no Sigmoid in the graph): the
    #: logits are [0, log q - log(1 - q)].
    probability_source: bool = False
    #: The user said what the output is (--output-kind): a probe run does not reinterpret it.
    kind_given: bool = False

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
                f"differentiable{_integer_input_note(readers_of(model.graph), chosen.name)}"
            )
    else:
        floats = [value for value in inputs if is_float_tensor(value)]
        if not floats:
            readers = readers_of(model.graph)
            described = "; ".join(
                f"{v.name} {type_description(v)}{_integer_input_note(readers, v.name)}" for v in inputs
            ) or "none"
            raise ModelError(
                f"the model has no float input to differentiate (inputs: {described}); integer "
                "inputs such as token ids are not differentiable"
            )
        # The largest float input is the data; small ones are usually masks or scalars.
        chosen = max(
            floats, key=lambda v: np.prod([d if isinstance(d, int) else 1 << 20 for d in value_shape(v) or [1]])
        )
    extra = [name for name in names if name != chosen.name]
    return chosen, extra


def _integer_input_note(readers: dict[str, list[onnx.NodeProto]], name: str) -> str:
    """', it indexes the embedding Gather 'embed' (table 'emb.weight')' when ``name`` feeds one.

    Token ids reach the network through an embedding lookup; the embedding's output is the first
    float tensor, and naming it tells the user what a differentiable audit would start from.
    ``readers`` (``tensors.readers_of``) makes the walk linear: a scan of every node per tensor on the way
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
            read = zipmap_probabilities(model, chosen.name)
            if read is not None:
                return read[0]
            raise InputError(
                f"output {requested!r} is {type_description(chosen)}, not a float tensor of class "
                "scores (for skl2onnx models convert with options={'zipmap': False})"
            )
        return chosen
    candidates = [value for value in outputs if is_float_tensor(value)]
    if not candidates:
        zipmaps = [read for read in (zipmap_probabilities(model, v.name) for v in outputs) if read is not None]
        if zipmaps:
            return zipmaps[0][0]
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
    node = _through_unit_means(model, producer_of, _score_producer(producer_of, output.name))
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
            "fimaudit cannot tell a probability from a logit there (say which with --output-kind "
            "sigmoid for a probability, logits for a binary logit)"
        )
    return "logits", output.name, "model output used as logits"


def _unit_mean_axes(model: onnx.ModelProto, node: onnx.NodeProto) -> list[int] | None:
    """The axes a ReduceMean node averages over (attribute or constant input), or None."""
    axes = ints_attribute(node, "axes")
    if axes is not None:
        return axes
    if len(node.input) > 1 and node.input[1]:
        value = constant_value(model, node.input[1])
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]
    return None


def _through_unit_means(
    model: onnx.ModelProto, producer_of: dict[str, onnx.NodeProto], node: onnx.NodeProto | None
) -> onnx.NodeProto | None:
    """Past ReduceMean nodes that average over axes of length 1: such a mean changes no value.

    silero-vad's head averages a Sigmoid's [N, 1, 1] output over its last axis. The batch axis
    never counts, and the lengths must be known after shape inference.
    """
    inferred: dict[str, onnx.ValueInfoProto] | None = None
    while node is not None and node.op_type == "ReduceMean" and node.input:
        axes = _unit_mean_axes(model, node)
        if not axes:
            return node
        if inferred is None:
            try:
                inferred = all_value_infos(infer_shapes_light(model))
            except Exception:  # no shapes: the mean is not known to be over unit axes
                return node
        value = inferred.get(node.input[0])
        shape = value_shape(value) if value is not None else None
        if shape is None:
            return node
        rank = len(shape)
        normal = [axis + rank if axis < 0 else axis for axis in axes]
        if any(axis <= 0 or axis >= rank or shape[axis] != 1 for axis in normal):
            return node
        node = _score_producer(producer_of, node.input[0])
    return node


def _given_kind(model: onnx.ModelProto, output: onnx.ValueInfoProto, kind: str) -> tuple[str, str, str, bool]:
    """(kind, logits source, description, source is a probability) for ``--output-kind``.

    logits: the output as it is; one score per sample is a binary logit s (two-class logits [0, s]).
    probabilities: the Softmax's input when one ends the graph, else log p; needs >= 2 columns.
    sigmoid: one score per sample, a probability q; the pre-sigmoid score when a Sigmoid ends the
    graph, else log q - log(1 - q).
    """
    if kind not in OUTPUT_KINDS:
        raise InputError(f"--output-kind {kind!r} is none of {', '.join(OUTPUT_KINDS)}")
    shape = value_shape(output) or []
    width = shape[-1] if len(shape) > 1 else (1 if len(shape) == 1 else None)
    single = width == 1
    producer_of = producers(model.graph)
    node = _through_unit_means(model, producer_of, _score_producer(producer_of, output.name))
    said = f" (--output-kind {kind})"
    if kind == "sigmoid":
        if isinstance(width, int) and width != 1:
            raise InputError(
                f"--output-kind sigmoid needs one score per sample; output {output.name!r} has {width} "
                "(use probabilities or logits)"
            )
        if node is not None and node.op_type == "Sigmoid":
            return "sigmoid", node.input[0], "two-class logits [0, s] from the pre-sigmoid score s" + said, False
        return "sigmoid", output.name, "two-class logits [0, log q - log(1 - q)] from the probability q" + said, True
    if kind == "probabilities":
        if single:
            raise InputError(
                f"--output-kind probabilities needs at least two classes; output {output.name!r} has one "
                "score per sample (use sigmoid for a probability)"
            )
        if node is not None and node.op_type == "Softmax":
            return "probabilities", node.input[0], "input of the final Softmax" + said, False
        return "probabilities", output.name, "log of the output probabilities" + said, False
    if single:
        return "sigmoid", output.name, "two-class logits [0, s] from the single logit s" + said, False
    return "logits", output.name, "model output used as logits" + said, False


def _zipmap_note(model: onnx.ModelProto, tensor: str) -> str:
    """'; read from ...' when ``tensor`` is not a model output but a ZipMap's input."""
    if any(value.name == tensor for value in model.graph.output):
        return ""
    for node in model.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type == "ZipMap" and node.input and node.input[0] == tensor:
            return (
                f"; the probability tensor {tensor!r} that ZipMap {node.name or node.output[0]!r} turns into "
                f"the sequence of maps {node.output[0]!r} (skl2onnx's default output)"
            )
    return ""


def _read_output(
    model: onnx.ModelProto, output: onnx.ValueInfoProto, output_kind: str | None
) -> tuple[str, str, str, bool, list[onnx.NodeProto]]:
    """(kind, logits source, description, source is a probability, nodes to add) of ``output``."""
    extra_nodes: list[onnx.NodeProto] = []
    probability_source = False
    scores = linear_classifier_scores(model, output.name) if output_kind in (None, "probabilities") else None
    if scores is not None:
        node, described = scores
        kind, source, transform = "probabilities", node.output[1], described
        extra_nodes.append(node)
    elif output_kind is not None:
        kind, source, transform, probability_source = _given_kind(model, output, output_kind)
    else:
        kind, source, transform = _classify_output(model, output)
    return kind, source, transform + _zipmap_note(model, output.name), probability_source, extra_nodes


def select_input_output(
    loaded: LoadedModel, input_name: str | None = None, output_name: str | None = None, output_kind: str | None = None
) -> Selection:
    """Pick the input and output to audit and work out how to obtain logits.

    ``output_kind`` (logits, probabilities, sigmoid; None: read from the graph) is what the user
    says the output is (``--output-kind``).
    """
    model = loaded.proto
    chosen_input, extra = _choose_input(model, input_name)
    chosen_output = _choose_output(model, output_name)
    kind, source, transform, probability_source, extra_nodes = _read_output(model, chosen_output, output_kind)
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
        extra_nodes=extra_nodes,
        probability_source=probability_source,
        kind_given=output_kind is not None,
    )


def as_log_probabilities(selection: Selection) -> Selection:
    """The same selection, reading probabilities found only at run time through log p.

    A kind the user gave (``--output-kind logits``) is kept: the selection comes back unchanged.
    """
    if selection.kind_given:
        return selection
    changed = copy.copy(selection)
    changed.output_kind = "probabilities"
    changed.logits_source = selection.output_name
    changed.logits_transform = "log of the output probabilities (no final Softmax found)"
    return changed


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True when every row is non-negative and sums to one: a softmax computed another way."""
    rows = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    return bool(rows.shape[1] > 1 and np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-4))


def _probability_logit(graph: onnx.GraphProto, new_nodes: list[onnx.NodeProto], q: str, elem_type: int) -> str:
    """Nodes computing log q - log(1 - q) (both clamped at float32's tiny): the logit of q."""
    graph.initializer.append(helper.make_tensor("fimaudit_q_tiny", elem_type, [], [float(np.finfo(np.float32).tiny)]))
    graph.initializer.append(helper.make_tensor("fimaudit_q_one", elem_type, [], [1.0]))
    new_nodes += [
        helper.make_node("Max", [q, "fimaudit_q_tiny"], ["fimaudit_q"], name="fimaudit_q"),
        helper.make_node("Sub", ["fimaudit_q_one", q], ["fimaudit_q_rest"], name="fimaudit_q_rest"),
        helper.make_node("Max", ["fimaudit_q_rest", "fimaudit_q_tiny"], ["fimaudit_q_other"], name="fimaudit_q_other"),
        helper.make_node("Log", ["fimaudit_q"], ["fimaudit_q_log"], name="fimaudit_q_log"),
        helper.make_node("Log", ["fimaudit_q_other"], ["fimaudit_q_log_other"], name="fimaudit_q_log_other"),
        helper.make_node(
            "Sub", ["fimaudit_q_log", "fimaudit_q_log_other"], ["fimaudit_q_logit"], name="fimaudit_q_logit"
        ),
    ]
    return "fimaudit_q_logit"


def build_logits_model(loaded: LoadedModel, selection: Selection) -> onnx.ModelProto:
    """A copy of the model whose only output is ``fimaudit_logits`` [batch, K].

    Nodes not needed for the logits are dropped so that ONNX Runtime does no wasted work.
    """
    model = copy.deepcopy(loaded.proto)
    graph = model.graph
    source = selection.logits_source
    infos = all_value_infos(model)
    known = source in infos and is_tensor(infos[source])
    elem_type = infos[source].type.tensor_type.elem_type if known else onnx.TensorProto.FLOAT
    new_nodes: list[onnx.NodeProto] = [copy.deepcopy(node) for node in selection.extra_nodes]
    current = source
    if selection.output_kind == "sigmoid" and selection.probability_source:
        current = _probability_logit(graph, new_nodes, current, elem_type)
    if selection.output_kind == "probabilities" and source == selection.output_name:
        tiny = np.finfo(np.float32).tiny
        floor = helper.make_tensor("fimaudit_tiny", elem_type, [], [float(tiny)])
        graph.initializer.append(floor)
        new_nodes.append(
            helper.make_node("Max", [current, "fimaudit_tiny"], ["fimaudit_clamped"], name="fimaudit_clamp")
        )
        new_nodes.append(helper.make_node("Log", ["fimaudit_clamped"], ["fimaudit_logp"], name="fimaudit_log"))
        current = "fimaudit_logp"
    new_nodes.append(helper.make_node("Flatten", [current], ["fimaudit_flat"], name="fimaudit_flatten", axis=1))
    current = "fimaudit_flat"
    if selection.output_kind == "sigmoid":
        zero = helper.make_tensor("fimaudit_zero", elem_type, [], [0.0])
        graph.initializer.append(zero)
        new_nodes.append(helper.make_node("Mul", [current, "fimaudit_zero"], ["fimaudit_zeros"], name="fimaudit_zeros"))
        new_nodes.append(
            helper.make_node("Concat", ["fimaudit_zeros", current], ["fimaudit_pair"], name="fimaudit_pair", axis=1)
        )
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
