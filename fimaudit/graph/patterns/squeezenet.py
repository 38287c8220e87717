"""SqueezeNet: Fire modules, y = [e1(s(x)), e3(s(x))].

s is a 1x1 "squeeze" conv (+ act) and e1, e3 a 1x1 and a k x k "expand" conv (+ act) of the
same squeezed tensor, concatenated on channels.

Why it is not a DenseNet: neither concatenated input is computed from the other (the block
keeps nothing of its input), and not an Inception module: both branches read the one 1x1
squeeze output, which is narrower than what they produce. Its bound composition is that of a
chain whose Concat adds the squares of the two branches (the l2 rule of Concat); the optional
simple bypass (SqueezeNet with residual Adds around Fire modules) is reported as residual.
"""

from __future__ import annotations

import onnx

from fimaudit.graph.onnx_utils import int_attribute
from fimaudit.graph.patterns.common import (
    ACTIVATION_OPS,
    NORM_OPS,
    Block,
    PatternResult,
    Reachability,
    find_merges,
    find_residuals,
    float_varying_inputs,
    weighted_kind,
)
from fimaudit.graph.patterns.mobilenet import is_pointwise
from fimaudit.graph.view import GraphView

FAMILY = "squeezenet"
_PASS = ACTIVATION_OPS | NORM_OPS | {"Identity", "Dropout", "Cast"}


def _conv_behind(view: GraphView, name: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """The conv that produced ``name``, across its norm and activation."""
    passed: list[onnx.NodeProto] = []
    for _ in range(6):
        node = view.producer.get(name)
        if node is None:
            return None, passed
        if weighted_kind(view, node) == "conv":
            return node, passed
        if node.op_type not in _PASS or len(float_varying_inputs(view, node)) != 1:
            return None, passed
        passed.append(node)
        name = float_varying_inputs(view, node)[0]
    return None, passed


def _channels(view: GraphView, name: str) -> int | None:
    shape = view.shape(name)
    return shape[1] if shape is not None and len(shape) >= 3 else None


def fire_modules(view: GraphView) -> list[Block]:
    """Every channel Concat of two convs (one 1x1, one larger) reading one squeezed tensor."""
    blocks: list[Block] = []
    for node in view.nodes:
        if node.op_type != "Concat":
            continue
        operands = float_varying_inputs(view, node)
        shape = view.shape(node.output[0])
        if len(operands) != 2 or (shape is not None and int_attribute(node, "axis", 1) % len(shape) != 1):
            continue
        behind = [_conv_behind(view, name) for name in operands]
        branches = [(conv, passed) for conv, passed in behind if conv is not None]
        convs = [conv for conv, _ in branches]
        if len(convs) != len(behind) or convs[0].input[0] != convs[1].input[0]:
            continue
        squeezed = convs[0].input[0]
        pointwise = [is_pointwise(view, conv) for conv in convs]
        if pointwise.count(True) != 1:
            continue  # one 1x1 and one k x k expand
        squeeze, before = _conv_behind(view, squeezed)
        if squeeze is None or not is_pointwise(view, squeeze):
            continue
        width, expanded = _channels(view, squeeze.output[0]), _channels(view, node.output[0])
        if width is not None and expanded is not None and width >= expanded:
            continue  # a squeeze is narrower than the expansion
        body = [squeeze, *reversed(before)] + [n for conv, passed in branches for n in [conv, *reversed(passed)]]
        names = tuple(name for n in body for name in view.original_names(n)) + (node.name,)
        blocks.append(Block("fire", names, squeeze.input[0], node.output[0], {
            "squeeze": squeeze.name, "expand_1x1": convs[pointwise.index(True)].name,
            "expand_kxk": convs[pointwise.index(False)].name, "concat": node.name,
        }))
    return blocks


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """Fire modules (and simple bypass Adds); any other merge rules the family out."""
    fires = fire_modules(view)
    if not fires:
        return PatternResult(
            FAMILY, [], "no Fire module (1x1 squeeze conv -> 1x1 and k x k expand convs -> channel Concat)"
        )
    bypass = [r for r in find_residuals(view, reach) if any(r.fork == b.output or r.fork == b.input for b in fires)]
    explained = {b.details["concat"] for b in fires} | {r.add.name for r in bypass}
    other = [n.name for n in find_merges(view, reach) if n.name not in explained]
    if other:
        shown = ", ".join(other[:3]) + (" ..." if len(other) > 3 else "")
        return PatternResult(
            FAMILY,
            [],
            f"{len(fires)} Fire module(s), but {len(other)} other merge(s) of input-dependent tensors ({shown})",
        )
    blocks = list(fires)
    for residual in bypass:
        nodes = tuple(name for n in residual.branch for name in view.original_names(n)) + (residual.add.name,)
        blocks.append(Block("residual", nodes, residual.fork, residual.add.output[0],
                            {"add": residual.add.name, "shortcut": residual.shortcut_kind}, join=residual.add.name))
    position = {out: i for i, n in enumerate(view.nodes) for out in n.output}
    blocks.sort(key=lambda b: position.get(b.output or "", 0))
    return PatternResult(FAMILY, blocks)
