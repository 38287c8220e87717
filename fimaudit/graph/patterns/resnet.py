"""ResNet: y = f(x) + x (identity shortcut) or f(x) + P(x) (projection shortcut).

P is a strided 1x1 convolution with its BatchNorm; the residual branch f holds convolutions.

Gating products of two activations (squeeze-excitation in MobileNetV3 / EfficientNet) fall
outside this pattern: the bound of a residual network is 1 + L_f per block, and a gate is no
part of that formula.
"""

from __future__ import annotations

from fimaudit.graph.patterns.common import Block, PatternResult, Reachability, find_gates, find_residuals, weighted_kind
from fimaudit.graph.view import GraphView

FAMILY = "resnet"


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """One block per residual addition whose branch holds a convolution."""
    residuals = find_residuals(view, reach)
    if not residuals:
        return PatternResult(
            FAMILY, [], "no residual addition (Add of a branch with weights and its own input or a projection of it)"
        )
    blocks = []
    for residual in residuals:
        convs = [n for n in residual.branch if weighted_kind(view, n) == "conv"]
        if not convs:
            continue
        nodes = [name for n in residual.branch + residual.shortcut for name in view.original_names(n)]
        nodes.append(residual.add.name)
        after = view.consumers.get(residual.add.output[0], [])
        output = residual.add.output[0]
        if len(after) == 1 and after[0].op_type in ("Relu", "Clip", "Gelu", "Silu", "HardSwish"):
            nodes.append(after[0].name)
            output = after[0].output[0]
        blocks.append(Block("residual", tuple(nodes), residual.fork, output, join=residual.add.name, details={
            "add": residual.add.name,
            "shortcut": residual.shortcut_kind,
            "shortcut_nodes": [name for n in residual.shortcut for name in view.original_names(n)],
            "branch_convolutions": len(convs),
        }))
    if not blocks:
        return PatternResult(
            FAMILY, [], f"{len(residuals)} residual addition(s) found, but no branch holds a convolution"
        )
    gates = find_gates(view, reach)
    if gates:
        names = ", ".join(n.name for n in gates[:3]) + (" ..." if len(gates) > 3 else "")
        return PatternResult(FAMILY, blocks, f"{len(gates)} gating product(s) of two activations ({names}): "
                             "squeeze-excitation style gates are not part of the residual pattern")
    return PatternResult(FAMILY, blocks)
