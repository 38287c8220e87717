"""DenseNet: channel concatenation of growing feature maps, y = [x, f(x)].

A Concat on the channel axis is "dense" when one of its inputs is computed from another of its
inputs through a convolution: the block keeps its input and appends new features. Concats of
parallel branches that share only an ancestor (Inception) are not dense and do not match.
"""

from __future__ import annotations

from fimaudit.graph.onnx_utils import int_attribute
from fimaudit.graph.patterns.common import Block, PatternResult, Reachability, float_varying_inputs, weighted_kind
from fimaudit.graph.view import GraphView

FAMILY = "densenet"


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """One block per dense concatenation: the kept features and the new features' layers."""
    blocks: list[Block] = []
    concats = 0
    for node in view.nodes:
        if node.op_type != "Concat":
            continue
        operands = float_varying_inputs(view, node)
        if len(operands) < 2:
            continue
        concats += 1
        shape = view.shape(node.output[0])
        axis = int_attribute(node, "axis", 1)
        if shape is not None and len(shape) >= 3 and axis % len(shape) != 1:
            continue
        kept = [a for a in operands if any(reach.depends(b, a) and a != b for b in operands)]
        new = [b for b in operands if any(reach.depends(b, a) and a != b for a in operands)]
        if not kept or not new:
            continue
        branch: list = []
        for target in new:
            # the latest kept input it is computed from starts its branch
            sources = [a for a in kept if a != target and reach.depends(target, a)]
            source = max(sources, key=lambda name: reach.position.get(name, -1))
            branch.extend(n for n in reach.between(source, target) if n not in branch)
        convs = sum(1 for n in branch if weighted_kind(view, n) == "conv")
        if convs == 0:
            continue
        names = [name for n in branch for name in view.original_names(n)] + [node.name]
        details = {"concat": node.name, "inputs": len(operands), "new_features": len(new), "convolutions": convs}
        blocks.append(Block("dense_layer", tuple(names), kept[0], node.output[0], details))
    if not blocks:
        reason = ("no channel concatenation of input-dependent tensors" if concats == 0 else
                  f"{concats} concatenation(s) found, but none appends conv features computed from its other inputs")
        return PatternResult(FAMILY, [], reason)
    return PatternResult(FAMILY, blocks)
