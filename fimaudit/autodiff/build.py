"""The graph walk: from a forward model to its reverse-mode (VJP) and forward-mode (JVP) models.

The gradient models contain the whole forward graph (rules read forward values by name) plus
the gradient nodes the rules emit. Every gradient tensor carries a leading axis M (see
``registry.py``), so one run computes M products for a whole batch:

- VJP model: inputs ``x`` and ``fimaudit_cotangent`` [M, *shape(output)]; outputs the forward
  output and ``fimaudit_input_grad`` [M, *shape(x)], the cotangents pulled back to x.
- JVP model: inputs ``x`` and ``fimaudit_tangent`` [M, *shape(x)]; outputs the forward output
  and ``fimaudit_logits_tangent`` [M, *shape(output)].

Which tensors carry gradients is decided by dependency, not by op type: a tensor is
differentiable iff it depends on the input through float tensors and no zero-gradient op. Shape
arithmetic computed from the input (Shape -> Gather -> Concat -> Reshape target) is therefore off
the path automatically, and so is everything computed from weights alone.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import onnx
from onnx import helper, numpy_helper

from fimaudit.autodiff import fold_scalings, masked_rows, registry
from fimaudit.autodiff.context import GraphFacts, RuleContext
from fimaudit.autodiff.lowering import lower_for_gradients
from fimaudit.autodiff.probe_shapes import ShapeProbe, measured_shapes
from fimaudit.errors import NotDifferentiableError, UnsupportedOpError
from fimaudit.graph.onnx_utils import LazyConstants, infer_shapes_light, opset_version
from fimaudit.graph.tensors import (
    FLOAT_TYPES,
    Dim,
    declared_types_and_shapes,
    node_indices_needed_for,
    subgraph_inputs,
)

logger = logging.getLogger(__name__)

COTANGENT = "fimaudit_cotangent"
TANGENT = "fimaudit_tangent"
INPUT_GRAD = "fimaudit_input_grad"
OUTPUT_TANGENT = "fimaudit_logits_tangent"
LEAD_DIM = "fimaudit_m"


#: The oldest opset whose op forms the gradient rules emit (Slice/Pad inputs, Range, GatherElements,
#: ScatterElements, Equal on floats). Older models are converted first (``at_gradient_opset``).
GRADIENT_MIN_OPSET = 11


def at_gradient_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model itself, or (opset < 11) its conversion to opset 11 by ``onnx.version_converter``.

    Caffe2-era model-zoo graphs are opset 7-9; the conversion is said in a log warning, and the
    gradient models then hold the converted forward graph. A conversion failure is an
    UnsupportedOpError naming the opset.
    """
    opset = opset_version(model)
    if not opset or opset >= GRADIENT_MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, GRADIENT_MIN_OPSET)
    except Exception as exc:  # the converter raises plain RuntimeErrors (ConvertError) per adapter
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedOpError(
            f"gradient graphs need opset {GRADIENT_MIN_OPSET} op forms; the model is opset {opset} and "
            f"onnx.version_converter could not convert it: {first}",
            [],
        ) from exc
    _retype_clip_bounds(model, converted)
    # IR 3 (opset <= 7 era) requires every initializer to be a graph input; the gradient rules'
    # initializers are not, and opset 11 belongs to IR 6.
    converted.ir_version = max(converted.ir_version, 6)
    logger.warning(
        "model opset %d converted to opset %d with onnx.version_converter for the gradient graphs",
        opset,
        GRADIENT_MIN_OPSET,
    )
    return converted


def _retype_clip_bounds(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """Give the Clip bounds the converter made the model's float type (float64 models).

    The converter turns Clip's min/max attributes (opset < 11) into float32 Constants whatever
    the data type.
    """
    inputs = [value for value in original.graph.input if value.type.tensor_type.elem_type in FLOAT_TYPES]
    elem = inputs[0].type.tensor_type.elem_type if inputs else onnx.TensorProto.FLOAT
    if elem == onnx.TensorProto.FLOAT:
        return
    old = {name for node in original.graph.node for name in node.output}
    constants = {
        node.output[0]: node
        for node in converted.graph.node
        if node.op_type == "Constant" and node.output[0] not in old
    }
    for node in converted.graph.node:
        for name in node.input[1:3] if node.op_type == "Clip" else []:
            source = constants.get(name)
            for attr in source.attribute if source is not None else []:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                    value = numpy_helper.to_array(attr.t).astype(helper.tensor_dtype_to_np_dtype(elem))
                    attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference with data propagation; the model unchanged if inference fails."""
    try:
        return infer_shapes_light(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors
        logger.warning("shape inference failed (%s); gradient rules get fewer static shapes", exc)
        return model


@dataclass
class Analysis:
    """The forward model, its facts, and the nodes that need a gradient rule."""

    model: onnx.ModelProto
    input_name: str
    output_name: str
    facts: GraphFacts
    #: Nodes on the path, in graph (topological) order, whose outputs lead to the output.
    active: list[onnx.NodeProto]
    #: Nodes that depend on the input, feed the output, and are marked not differentiable.
    blocked: list[onnx.NodeProto]


def analyse(model: onnx.ModelProto, input_name: str, output_name: str, probe: ShapeProbe | None = None) -> Analysis:
    """Shape inference, the differentiable path, and the nodes that need rules.

    With a ``probe``, shapes that static inference left unknown around the active nodes are
    measured by running the model (probe_shapes.py).
    """
    registry.load_rules()
    inferred = _infer(lower_for_gradients(at_gradient_opset(model), input_name, output_name))
    graph = inferred.graph
    types, shapes = declared_types_and_shapes(inferred.graph)
    input_type = types.get(input_name, onnx.TensorProto.FLOAT)

    def is_float(name: str) -> bool:
        return types.get(name, input_type) in FLOAT_TYPES  # unknown type: assume float (needs a rule)

    depends: set[str] = {input_name}  # depends on the input at all (any type)
    differentiable: set[str] = {input_name}
    for node in graph.node:
        reads = [name for name in node.input if name] + sorted(subgraph_inputs(node))
        if not any(name in depends for name in reads):
            continue
        depends.update(name for name in node.output if name)
        if registry.is_zero_gradient(node.op_type, node.domain):
            continue
        if any(name in differentiable for name in reads):
            differentiable.update(name for name in node.output if name and is_float(name))
    if output_name not in differentiable:
        raise NotDifferentiableError(
            f"output {output_name!r} does not depend on input {input_name!r} through differentiable "
            "float operations (the path goes through integer, boolean or zero-gradient ops only)"
        )
    # Backwards from the output: which tensors on the path lead to it.
    leads: set[str] = {output_name}
    reaches: set[str] = {output_name}  # any dependency, for not-differentiable reporting
    active: list[onnx.NodeProto] = []
    blocked: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        reads = [name for name in node.input if name] + sorted(subgraph_inputs(node))
        if any(name in reaches for name in node.output):
            reaches.update(reads)
            if registry.is_not_differentiable(node.op_type, node.domain) and any(name in depends for name in reads):
                blocked.append(node)
        if not any(name in leads and name in differentiable for name in node.output):
            continue
        if not any(name in differentiable for name in reads):
            continue
        active.append(node)
        leads.update(name for name in reads if name in differentiable)
    active.reverse()
    blocked.reverse()
    if probe is not None:
        batch = (shapes.get(input_name) or ["N"])[0]
        named = {name for node in active for name in [*node.input, *node.output] if name}
        # A probe run copies the model and builds two sessions (9 s for VGG-11's 515 MB): it runs
        # only for shapes inference left unknown; tensors under fresh symbols join that run.
        missing = any(shapes.get(name) is None for name in named)
        unknown = sorted(name for name in named if _unsettled(shapes.get(name), batch)) if missing else []
        measured = measured_shapes(inferred, input_name, unknown, probe, batch if isinstance(batch, str) else "N")
        if unknown:
            logger.info(
                "shapes measured by a probe run for %d of %d tensors without a static shape",
                len(measured),
                len(unknown),
            )
        shapes.update(measured)
    facts = GraphFacts(
        shapes=shapes,
        elem_types=types,
        constants=LazyConstants.of_graph(graph),
        differentiable=differentiable & leads,
        opset=opset_version(inferred),
        float_type=input_type,
        producers={name: node for node in graph.node for name in node.output if name},
    )
    return Analysis(inferred, input_name, output_name, facts, active, blocked)


def _missing(analysis: Analysis, mode: str) -> list[tuple[str, str]]:
    lookup = registry.get_vjp if mode == "vjp" else registry.get_jvp
    missing = [(node.op_type, node.name) for node in analysis.blocked]
    for node in analysis.active:
        if lookup(node.op_type, node.domain) is None:
            display = node.op_type if not node.domain or node.domain == "ai.onnx" else f"{node.domain}::{node.op_type}"
            missing.append((display, node.name))
    return missing


def missing_rules(
    model: onnx.ModelProto, input_name: str, output_name: str | None = None, mode: str = "vjp"
) -> list[tuple[str, str]]:  # no probe: preflight runs nothing
    """Preflight: (op_type, node name) of every node on the path the builder cannot handle.

    Checks before any compute. Includes nodes marked not differentiable that depend on the input
    and feed the output. ``output_name`` defaults to the model's single output.
    """
    output = output_name or model.graph.output[0].name
    return _missing(analyse(model, input_name, output), mode)


def unsupported_error(missing: list[tuple[str, str]], mode: str = "vjp") -> UnsupportedOpError:
    """One readable error for a preflight failure."""
    ops = sorted({op for op, _ in missing})
    nodes = ", ".join(f"{op} ({name or 'unnamed'})" for op, name in missing[:8])
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    blocked = sorted({op for op, _ in missing if registry.is_not_differentiable(op)})
    note = f"; not differentiable: {', '.join(blocked)}" if blocked else ""
    return UnsupportedOpError(
        f"no {'reverse' if mode == 'vjp' else 'forward'}-mode gradient rule for {', '.join(ops)} "
        f"on the differentiable path: {nodes}{more}{note}. Ops with rules: "
        f"{', '.join(registry.vjp_ops() if mode == 'vjp' else registry.jvp_ops())} (and zero-gradient "
        "shape/comparison ops)",
        ops,
    )


def _new_context(analysis: Analysis, mode: str, seed: str) -> RuleContext:
    taken = {name for node in analysis.model.graph.node for name in [*node.input, *node.output, node.name]}
    taken |= {init.name for init in analysis.model.graph.initializer}
    taken |= {value.name for value in analysis.model.graph.input}
    return RuleContext(facts=analysis.facts, mode=mode, seed=seed, taken_names=taken)


def _gradient_value_info(name: str, elem_type: int, shape: list[Dim] | None) -> onnx.ValueInfoProto:
    dims: list[int | str | None] | None = None if shape is None else [LEAD_DIM, *shape]
    return helper.make_tensor_value_info(name, elem_type, dims)


def _assemble(
    analysis: Analysis,
    ctx: RuleContext,
    seed: onnx.ValueInfoProto,
    result: str,
    result_name: str,
    result_of: str,
    skip_masked_rows: bool,
) -> onnx.ModelProto:
    model = copy.deepcopy(analysis.model)
    graph = model.graph
    ctx.nodes.append(helper.make_node("Identity", [result], [result_name], name=ctx.fresh("result")))
    if analysis.facts.opset >= fold_scalings.MIN_OPSET:
        folds = fold_scalings.fold_scalings(ctx.nodes, seed.name, {result_name, analysis.output_name}, ctx.fresh)
        logger.debug("%d scalings folded into the forward half's factors", folds)
    skipped = 0
    if skip_masked_rows:
        weights = {tensor.name: tensor for tensor in graph.initializer}
        skipped = masked_rows.skip_masked_rows(ctx, weights, {result_name, analysis.output_name})
        logger.debug("%d products skip the rows their mask zeroes", skipped)
    forward_count = len(graph.node)
    graph.node.extend(ctx.nodes)
    _drop_dead_emitted(graph, forward_count, [analysis.output_name, result_name])
    graph.initializer.extend(ctx.initializers)
    graph.input.append(seed)
    keep = [value for value in graph.output if value.name == analysis.output_name]
    del graph.output[:]
    graph.output.extend(keep)
    facts = analysis.facts
    result_type = facts.elem_types.get(result_of, facts.float_type)
    graph.output.append(_gradient_value_info(result_name, result_type, facts.shapes.get(result_of)))
    masked_rows.record(model, skipped)
    return model


def _unsettled(shape: list[Dim] | None, batch: Dim) -> bool:
    """True for a shape the probe should measure: unknown, or with a symbol other than the input's batch.

    Shape inference names each dim it cannot follow with a fresh symbol (``unk__12``) even where
    it is the batch or a constant: two such symbols cannot be matched, so every broadcast between
    them was undone at run time (Shape, Equal, NonZero and a ReduceSum copy; 19 of them in the
    small ViT's VJP, about a tenth of its run). Measured, they become the batch symbol or ints.
    Only when a probe runs anyway (some shape is unknown): on VGG-11 a probe for its nine
    symbol-named classifier tensors alone cost 9 s per gradient model and saved nothing.
    """
    if shape is None:
        return True
    return any(isinstance(dim, str) and dim != batch for dim in shape) or any(dim is None for dim in shape)


def _drop_dead_emitted(graph: onnx.GraphProto, forward_count: int, outputs: list[str]) -> None:
    """Remove emitted nodes no output reads (a placement's Pad when ``accumulate`` tiled its slab instead).

    Forward nodes stay as the model has them; only gradient nodes (from ``forward_count`` on) go.
    """
    needed = node_indices_needed_for(graph, outputs)
    dead = [index for index in range(forward_count, len(graph.node)) if index not in needed]
    for index in reversed(dead):
        del graph.node[index]


def _check_rule_result(node: onnx.NodeProto, names: object, width: int, mode: str) -> list[str | None]:
    if not isinstance(names, (list, tuple)) or len(names) > width:
        raise TypeError(f"{mode} rule of {node.op_type} returned {names!r}; expected a list of at most {width} names")
    return list(names) + [None] * (width - len(names))


def build_vjp_model(
    model: onnx.ModelProto,
    input_name: str,
    output_name: str | None = None,
    probe: ShapeProbe | None = None,
    skip_masked_rows: bool = False,
) -> onnx.ModelProto:
    """The reverse-mode model: (x, cotangent [M, *out]) -> (output, input gradient [M, *x]).

    ``skip_masked_rows``: products read only the rows of a large weight its mask keeps
    (masked_rows.py); for a model that runs many products per forward pass, not for one that
    makes dense Jacobians (the forward half then gathers rows for one run).
    """
    output = output_name or model.graph.output[0].name
    analysis = analyse(model, input_name, output, probe)
    missing = _missing(analysis, "vjp")
    if missing:
        raise unsupported_error(missing, "vjp")
    facts = analysis.facts
    ctx = _new_context(analysis, "vjp", COTANGENT)
    contributions: dict[str, list[str]] = {output: [COTANGENT]}
    for node in reversed(analysis.active):
        grads = [ctx.accumulate(contributions[name]) if contributions.get(name) else None for name in node.output]
        if all(g is None for g in grads):
            continue
        rule = registry.get_vjp(node.op_type, node.domain)
        assert rule is not None  # checked by _missing
        results = _check_rule_result(node, rule(ctx, node, grads), len(node.input), "VJP")
        for name, grad in zip(node.input, results, strict=True):
            if grad is not None and ctx.needs_gradient(name):
                contributions.setdefault(name, []).append(grad)
    if not contributions.get(input_name):
        raise NotDifferentiableError(f"no gradient reaches input {input_name!r}")
    result = ctx.accumulate(contributions[input_name])
    seed = _gradient_value_info(COTANGENT, facts.elem_types.get(output, facts.float_type), facts.shapes.get(output))
    return _assemble(analysis, ctx, seed, result, INPUT_GRAD, input_name, skip_masked_rows)


def build_jvp_model(
    model: onnx.ModelProto, input_name: str, output_name: str | None = None, probe: ShapeProbe | None = None
) -> onnx.ModelProto:
    """The forward-mode model: (x, tangent [M, *x]) -> (output, output tangent [M, *out])."""
    output = output_name or model.graph.output[0].name
    analysis = analyse(model, input_name, output, probe)
    missing = _missing(analysis, "jvp")
    if missing:
        raise unsupported_error(missing, "jvp")
    facts = analysis.facts
    ctx = _new_context(analysis, "jvp", TANGENT)
    tangents: dict[str, str] = {input_name: TANGENT}
    for node in analysis.active:
        inputs = [tangents.get(name) if ctx.needs_gradient(name) else None for name in node.input]
        if all(t is None for t in inputs):
            continue
        rule = registry.get_jvp(node.op_type, node.domain)
        assert rule is not None
        results = _check_rule_result(node, rule(ctx, node, inputs), len(node.output), "JVP")
        for name, tangent in zip(node.output, results, strict=True):
            if tangent is not None and ctx.needs_gradient(name):
                tangents[name] = tangent
    if output not in tangents:
        raise NotDifferentiableError(f"no tangent reaches output {output!r}")
    input_type = facts.elem_types.get(input_name, facts.float_type)
    seed = _gradient_value_info(TANGENT, input_type, facts.shapes.get(input_name))
    return _assemble(analysis, ctx, seed, tangents[output], OUTPUT_TANGENT, output, True)
