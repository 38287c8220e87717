"""VGG: a plain chain of convolution stages, followed by a dense classifier.

A stage is conv [-> norm] -> activation, repeated, then a pooling. No skip connection of any kind.
"""

from __future__ import annotations

from fimaudit.graph.patterns.common import (
    Block,
    PatternResult,
    Reachability,
    find_attention,
    find_gates,
    find_merges,
    find_residuals,
    is_pooling,
    weighted_kind,
)
from fimaudit.graph.view import GraphView

FAMILY = "vgg"


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """Conv stages split at pooling layers, then the classifier."""
    convs = [n for n in view.nodes if weighted_kind(view, n) == "conv"]
    if len(convs) < 2:
        return PatternResult(FAMILY, [], f"{len(convs)} convolution(s) on the input path; a VGG chain needs at least 2")
    if find_attention(view):
        return PatternResult(FAMILY, [], "attention present")
    merges = [node.name for node in find_merges(view, reach)]
    if merges:
        kinds = (
            "residual additions" if find_residuals(view, reach)
            else ("gating products" if find_gates(view, reach) else "merges")
        )
        shown = ", ".join(merges[:3]) + (" ..." if len(merges) > 3 else "")
        return PatternResult(
            FAMILY, [], f"not a plain chain: {len(merges)} {kinds} of input-dependent tensors ({shown})"
        )
    blocks: list[Block] = []
    current: list[str] = []
    stage_input: str | None = None
    count = 0
    seen_conv = False
    for node in view.nodes:
        if node.output and node.output[0] not in view.varying:
            continue
        kind = weighted_kind(view, node)
        if kind == "conv":
            seen_conv = True
            count += 1
            if stage_input is None:
                stage_input = node.input[0]
        if not seen_conv:
            continue
        current.extend(view.original_names(node))
        if is_pooling(view, node) and count:
            details = {"convolutions": count, "pool": node.op_type}
            blocks.append(Block("conv_stage", tuple(current), stage_input, node.output[0], details))
            current, stage_input, count = [], None, 0
    if current:
        dense = sum(
            1 for n in view.nodes
            if weighted_kind(view, n) == "dense" and any(x in current for x in view.original_names(n))
        )
        kind = "classifier" if count == 0 else "conv_stage"
        blocks.append(Block(kind, tuple(current), None, None, {"convolutions": count, "dense_layers": dense}))
    return PatternResult(FAMILY, blocks)
