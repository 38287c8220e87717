"""MLP: dense layers with pointwise activations between them.

No convolution, no attention and no skip connection.
"""

from __future__ import annotations

from dataclasses import replace

from fimaudit.graph.patterns.common import (
    CONV_OPS,
    Block,
    PatternResult,
    Reachability,
    find_merges,
    weighted_kind,
)
from fimaudit.graph.view import GraphView

FAMILY = "mlp"


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """One block per dense layer (with the activation that follows it)."""
    convs = [n.name for n in view.nodes if n.op_type in CONV_OPS and n.input[0] in view.varying]
    if convs:
        return PatternResult(FAMILY, [], f"{len(convs)} convolution(s) present")
    merges = [n.name for n in find_merges(view, reach)]
    if merges:
        return PatternResult(
            FAMILY,
            [],
            f"not a chain: {len(merges)} node(s) combine two input-dependent tensors ({', '.join(merges[:3])})",
        )
    blocks: list[Block] = []
    for node in view.nodes:
        if weighted_kind(view, node) == "dense":
            blocks.append(
                Block("dense", tuple(view.original_names(node)), node.input[0], node.output[0], {"op": node.op_type})
            )
        elif (
            blocks and node.output and node.output[0] in view.varying
            and node.op_type not in ("Identity", "Flatten", "Reshape")
        ):
            last = blocks[-1]  # the activation after a dense layer is part of its block
            blocks[-1] = replace(last, nodes=(*last.nodes, *view.original_names(node)), output=node.output[0])
    if not blocks:
        return PatternResult(FAMILY, [], "no dense layer on the input path")
    return PatternResult(FAMILY, blocks)
