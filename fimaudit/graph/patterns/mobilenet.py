"""MobileNet V2/V3, EfficientNet: inverted residual blocks.

    x -> [1x1 expand -> act] -> k x k depthwise (group = channels) -> act
      -> [squeeze-excitation: x * g(x), g = gate(W2 act(W1 pool(x)))] -> 1x1 project [-> + x]

The expansion is absent when its ratio is 1 (MobileNetV2's first block, EfficientNet's MBConv1);
the gate g is Sigmoid (SE, EfficientNet) or HardSigmoid (MobileNetV3), its layers 1x1 convs or
dense layers, its pool GlobalAveragePool or ReduceMean. Activations may be fused (HardSwish,
Silu) or written out (x * sigmoid(x)): fusion.py has made them one node already.

Why a family of its own: the gate multiplies two activations, so the block's Lipschitz constant
is not the residual 1 + L_f but (1 +) L_project (sup g + sup_c ||x_c|| L_g) L_depthwise L_expand
(bounds/compose.py, ``inverted_residual_factor``), whose middle term grows with the size of the
activations. A plain depthwise-separable chain without residual or gate (MobileNetV1) is a chain
and stays VGG; so does a residual depthwise-separable block (depthwise -> 1x1, + x) in a network
with no expansion and no gate anywhere: that is a residual network (resnet). Inside a network
that has expansions or gates, such expansion-1 blocks are inverted residuals too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from fimaudit.graph.onnx_utils import int_attribute
from fimaudit.graph.patterns.common import (
    ACTIVATION_OPS,
    NORM_OPS,
    Block,
    PatternResult,
    Reachability,
    find_merges,
    float_varying_inputs,
    is_pooling,
    weighted_kind,
)
from fimaudit.graph.view import GraphView

FAMILY = "mobilenet"
GATE_OPS = ("Sigmoid", "HardSigmoid")
# Ops that keep a tensor on the block's main path (one varying input, same meaning).
_MAIN_PATH = ACTIVATION_OPS | NORM_OPS | {"Identity", "Dropout", "Cast"}
# Ops that carry the gate's per-channel vector to the broadcast product.
_GATE_RESHAPE = {"Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Cast"}
_STEPS = 12


def _weight_shape(view: GraphView, node: onnx.NodeProto) -> tuple[int, ...] | None:
    if len(node.input) < 2:
        return None
    weight = view.const(node.input[1])
    if weight is not None:
        return tuple(int(d) for d in np.shape(weight))
    return view.shape(node.input[1])


def is_depthwise(view: GraphView, node: onnx.NodeProto) -> bool:
    """A Conv whose every group holds one input channel (group = input channels > 1)."""
    if node.op_type != "Conv" or weighted_kind(view, node) != "conv":
        return False
    shape = _weight_shape(view, node)
    group = int_attribute(node, "group", 1)
    return shape is not None and len(shape) >= 3 and group > 1 and shape[1] == 1


def is_pointwise(view: GraphView, node: onnx.NodeProto) -> bool:
    """A 1x1 Conv over all channels (group 1): expansion or projection."""
    if node.op_type != "Conv" or weighted_kind(view, node) != "conv":
        return False
    shape = _weight_shape(view, node)
    return (
        shape is not None and len(shape) >= 3
        and int_attribute(node, "group", 1) == 1 and all(d == 1 for d in shape[2:])
    )


@dataclass(frozen=True)
class Gate:
    """y = x * g(x): the product node, its main-path factor x and the gate vector g."""

    mul: onnx.NodeProto
    features: str
    gate: str
    activation: str
    nodes: tuple[onnx.NodeProto, ...]


def find_se_gate(view: GraphView, reach: Reachability, mul: onnx.NodeProto) -> Gate | None:
    """``mul`` as a squeeze-excitation product x * g(x).

    g reaches back to x through a gate activation, weighted layers and a spatial pooling of x.
    """
    if mul.op_type != "Mul":
        return None
    operands = float_varying_inputs(view, mul)
    if len(operands) != 2 or operands[0] == operands[1]:
        return None
    for features, gate in (operands, operands[::-1]):
        if not reach.depends(gate, features) or reach.depends(features, gate):
            continue
        path = reach.between(features, gate)
        if not path:
            continue
        head = view.producer.get(gate)
        while head is not None and head.op_type in _GATE_RESHAPE:
            head = view.producer.get(float_varying_inputs(view, head)[0]) if float_varying_inputs(view, head) else None
        if head is None or head.op_type not in GATE_OPS:
            continue
        if not any(is_pooling(view, n) for n in path) or not any(weighted_kind(view, n) for n in path):
            continue
        if any(len(float_varying_inputs(view, n)) > 1 for n in path):
            continue  # a gate computed from one tensor only
        return Gate(mul, features, gate, head.op_type, tuple(path))
    return None


def on_main_path(view: GraphView, node: onnx.NodeProto) -> bool:
    """Norms, activations, pass-through ops, and scaling or shifting by a fixed tensor.

    The last is BatchNorm written out as Mul and Add by tf2onnx.
    """
    if len(float_varying_inputs(view, node)) != 1 or len(view.varying_inputs(node)) != 1:
        return False
    return node.op_type in _MAIN_PATH or node.op_type in ("Mul", "Add", "Sub", "Div")


def _single_consumer(view: GraphView, name: str) -> list[onnx.NodeProto]:
    return [n for n in view.consumers.get(name, []) if any(o in view.varying for o in n.output)]


def _forward(
    view: GraphView, reach: Reachability, start: str
) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto], Gate | None]:
    """From the depthwise output to the projection: (project conv, nodes passed, SE gate)."""
    name, passed, gate = start, [], None
    for _ in range(_STEPS):
        consumers = _single_consumer(view, name)
        if len(consumers) == 1 and on_main_path(view, consumers[0]):
            passed.append(consumers[0])
            name = consumers[0].output[0]
            continue
        if len(consumers) == 1 and is_pointwise(view, consumers[0]):
            return consumers[0], passed, gate
        found = None
        for node in consumers:
            found = find_se_gate(view, reach, node)
            if found is not None and found.features == name:
                break
            found = None
        if found is None or gate is not None:
            return None, passed, gate
        gate = found
        passed.extend([*found.nodes, found.mul])
        name = found.mul.output[0]
    return None, passed, gate


def _backward(view: GraphView, name: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """From the depthwise input back to the expansion conv, across its norm and activation."""
    passed: list[onnx.NodeProto] = []
    for _ in range(_STEPS):
        node = view.producer.get(name)
        if node is None:
            return None, passed
        if is_pointwise(view, node):
            return node, passed
        if not on_main_path(view, node):
            return None, passed
        passed.append(node)
        name = float_varying_inputs(view, node)[0]
    return None, passed


def _residual_after(view: GraphView, name: str, block_input: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """The Add of the projection (after its norm) and the block input, if there is one."""
    passed: list[onnx.NodeProto] = []
    for _ in range(_STEPS):
        consumers = _single_consumer(view, name)
        if len(consumers) != 1:
            return None, passed
        node = consumers[0]
        if node.op_type in ("Add", "Sum") and set(float_varying_inputs(view, node)) == {name, block_input}:
            return node, passed
        if not (
            node.op_type in NORM_OPS | {"Identity", "Dropout"}
            or (node.op_type in ("Mul", "Add", "Sub", "Div") and on_main_path(view, node))
        ):
            return None, passed
        passed.append(node)
        name = node.output[0]
    return None, passed


def _widens(view: GraphView, conv: onnx.NodeProto) -> bool:
    """An expansion produces more channels than it reads (unknown shapes: assumed)."""
    shape = _weight_shape(view, conv)
    return shape is None or shape[0] > shape[1]


def _names(view: GraphView, nodes: list[onnx.NodeProto]) -> tuple[str, ...]:
    return tuple(name for node in nodes for name in view.original_names(node))


def inverted_residuals(view: GraphView, reach: Reachability) -> list[Block]:
    """One block per depthwise conv between an (optional) 1x1 expansion and a 1x1 projection.

    The block includes its squeeze-excitation gate and residual Add when present.
    """
    blocks: list[Block] = []
    for node in view.nodes:
        if not is_depthwise(view, node):
            continue
        project, middle, gate = _forward(view, reach, node.output[0])
        if project is None:
            continue
        expand, before = _backward(view, node.input[0])
        if expand is not None and not _widens(view, expand):
            expand, before = None, []
        block_input = expand.input[0] if expand is not None else node.input[0]
        add, after = _residual_after(view, project.output[0], block_input)
        if (
            add is None and expand is not None
            and _residual_after(view, project.output[0], node.input[0])[0] is not None
        ):
            # the 1x1 conv before was a stem or the previous stage, not this block's expansion
            expand, before, block_input = None, [], node.input[0]
            add, after = _residual_after(view, project.output[0], block_input)
        body = [*([expand] if expand is not None else []), *reversed(before), node, *middle, project, *after]
        output = add.output[0] if add is not None else (after[-1].output[0] if after else project.output[0])
        details = {
            "expand": expand.name if expand is not None else None,
            "depthwise": node.name,
            "kernel": list(_weight_shape(view, node) or ())[2:],
            "squeeze_excitation": None if gate is None else {
                "mul": gate.mul.name, "gate": gate.activation, "features": gate.features, "gate_tensor": gate.gate},
            "project": project.name,
            "residual_add": add.name if add is not None else None,
        }
        nodes = _names(view, body) + ((add.name,) if add is not None else ())
        blocks.append(
            Block("inverted_residual", nodes, block_input, output, details, join=add.name if add is not None else None)
        )
    return blocks


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """Inverted residual blocks; every merge of the graph must be one of their Adds or gates."""
    depthwise = [n for n in view.nodes if is_depthwise(view, n)]
    if not depthwise:
        return PatternResult(FAMILY, [], "no depthwise convolution (Conv with group = input channels)")
    blocks = inverted_residuals(view, reach)
    inverted = [b for b in blocks if b.details["expand"] or b.details["squeeze_excitation"]]
    if not inverted:
        return PatternResult(FAMILY, [], f"{len(depthwise)} depthwise convolution(s), but no inverted residual block "
                             "(1x1 expand -> depthwise -> [squeeze-excitation] -> 1x1 project) "
                             "with an expansion or a gate")
    explained = {b.join for b in blocks if b.join}
    explained |= {b.details["squeeze_excitation"]["mul"] for b in blocks if b.details["squeeze_excitation"]}
    other = [n.name for n in find_merges(view, reach) if n.name not in explained]
    if other:
        shown = ", ".join(other[:3]) + (" ..." if len(other) > 3 else "")
        return PatternResult(FAMILY, [], f"{len(blocks)} inverted residual block(s), "
                             f"but {len(other)} other merge(s) of input-dependent tensors outside them ({shown})")
    return PatternResult(FAMILY, blocks)
