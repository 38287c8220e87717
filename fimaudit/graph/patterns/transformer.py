"""Transformer / ViT: attention (MatMul-Softmax-MatMul on input-dependent operands).

LayerNorm and an MLP come with it, usually each inside a residual addition.

Why attention alone decides the family: a graph that computes softmax(q k^T) v from its own
activations is a transformer whatever else it holds; the LayerNorms and MLPs found around each
attention are reported as the block's parts (a post-norm or norm-free variant is still named).
"""

from __future__ import annotations

from fimaudit.graph.patterns.common import (
    Block,
    PatternResult,
    Reachability,
    find_attention,
    find_residuals,
    weighted_kind,
)
from fimaudit.graph.view import GraphView

FAMILY = "transformer"


def match(view: GraphView, reach: Reachability) -> PatternResult:
    """Attention blocks (with their residual sublayer, LayerNorm and MLP when present)."""
    attention = find_attention(view)
    if not attention:
        return PatternResult(
            FAMILY,
            [],
            "no attention: no Softmax between two MatMuls of input-dependent tensors and no fused Attention op",
        )
    residuals = find_residuals(view, reach)
    blocks: list[Block] = []
    used: set[str] = set()
    for core in attention:
        sublayer = next(
            (r for r in residuals if any(n in core.nodes for b in r.branch for n in view.original_names(b))), None
        )
        details = dict(core.details)
        nodes = list(core.nodes)
        if sublayer is not None:
            used.add(sublayer.add.name)
            norm_ops = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
            norms = [n.name for n in sublayer.branch if n.op_type in norm_ops]
            details.update({"residual_add": sublayer.add.name, "layernorm": norms[0] if norms else None,
                            "projections": sum(1 for n in sublayer.branch if weighted_kind(view, n))})
            nodes = [name for n in sublayer.branch for name in view.original_names(n)] + [sublayer.add.name]
            blocks.append(
                Block("attention", tuple(nodes), sublayer.fork, sublayer.add.output[0], details, join=sublayer.add.name)
            )
        else:
            blocks.append(core)
    for residual in residuals:
        if residual.add.name in used:
            continue
        dense = [n for n in residual.branch if weighted_kind(view, n) == "dense"]
        if len(dense) >= 2 and not any(n.op_type == "Softmax" for n in residual.branch):
            norms = [n.name for n in residual.branch if n.op_type == "LayerNormalization"]
            activation_ops = ("Gelu", "Relu", "Silu", "HardSwish", "Tanh", "Sigmoid")
            activations = sorted({n.op_type for n in residual.branch if n.op_type in activation_ops})
            nodes = [name for n in residual.branch for name in view.original_names(n)] + [residual.add.name]
            blocks.append(Block("mlp", tuple(nodes), residual.fork, residual.add.output[0],
                                {"residual_add": residual.add.name, "layernorm": norms[0] if norms else None,
                                 "dense_layers": len(dense), "activations": activations}, join=residual.add.name))
    position = {out: i for i, node in enumerate(view.nodes) for out in node.output}
    blocks.sort(key=lambda b: position.get(b.output or "", 0))
    return PatternResult(FAMILY, blocks)
