"""Which architecture family a model is.

VGG, ResNet, DenseNet, MobileNet, SqueezeNet, Transformer, MLP, or unknown.

Why: the paper's closed-form bounds are stated per family (chain, residual 1 + L, dense
sqrt(1 + L^2), attention), and a report reads better when it says "ResNet, 8 residual blocks"
than when it lists 60 nodes. Recognition works on the graph as exported — folded or unfolded
BatchNorm, GlobalAveragePool or ReduceMean, Gemm or MatMul, fused or decomposed LayerNorm and
GELU — because every pattern is stated over input-dependent tensors and fused operators
(graph/patterns/), not over node names or exporter habits.

Families are tried most specific first: transformer (attention, masked or not), densenet (dense
concats), mobilenet (inverted residuals: depthwise convs between 1x1 convs, with residual Adds
or squeeze-excitation gates), squeezenet (Fire modules), resnet (residual additions), vgg (plain
conv chain), mlp (plain dense chain). The first that matches names the family; every other
pattern's reason for failing is reported too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from fimaudit.graph.patterns import densenet, mlp, mobilenet, resnet, squeezenet, transformer, vgg
from fimaudit.graph.patterns.common import Block, PatternResult, Reachability
from fimaudit.graph.patterns.fusion import fuse_operators
from fimaudit.graph.view import GraphView
from fimaudit.text import visible

logger = logging.getLogger(__name__)

FAMILIES = ("transformer", "densenet", "mobilenet", "squeezenet", "resnet", "vgg", "mlp")
_MATCHERS: dict[str, Callable[[GraphView, Reachability], PatternResult]] = {
    "transformer": transformer.match,
    "densenet": densenet.match,
    "mobilenet": mobilenet.match,
    "squeezenet": squeezenet.match,
    "resnet": resnet.match,
    "vgg": vgg.match,
    "mlp": mlp.match,
}


@dataclass(frozen=True)
class Architecture:
    """The recognised family, its blocks and, for every family that did not match, why."""

    family: str
    blocks: tuple[Block, ...]
    reasons: Mapping[str, str]
    fused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def block_counts(self) -> dict[str, int]:
        """How many blocks of each kind, in order of first appearance."""
        kinds: dict[str, int] = {}
        for block in self.blocks:
            kinds[block.kind] = kinds.get(block.kind, 0) + 1
        return kinds

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the report's ``architecture`` section; field names are its contract)."""
        return {
            "family": self.family,
            "block_counts": self.block_counts,
            "blocks": [block.to_dict() for block in self.blocks],
            "reasons": dict(self.reasons),
            "fused_operators": {kind: len(names) for kind, names in self.fused.items()},
        }


def prepare_view(model: onnx.ModelProto, input_name: str | None = None, outputs: list[str] | None = None,
                 sample_shape: tuple[int, ...] | None = None) -> tuple[GraphView, dict[str, list[str]]]:
    """The fused GraphView of ``model`` that recognition and the bounds share."""
    view = GraphView.from_model(model, input_name, outputs, sample_shape)
    fused = fuse_operators(view)
    return view, fused


def recognise_view(view: GraphView, fused: dict[str, list[str]] | None = None) -> Architecture:
    """Run every family pattern over a prepared view and pick the first that matches."""
    reach = Reachability(view)
    results = {family: _MATCHERS[family](view, reach) for family in FAMILIES}
    family = next((name for name in FAMILIES if results[name].matched), "unknown")
    reasons = {name: str(result.reason) for name, result in results.items() if name != family and result.reason}
    blocks = tuple(results[family].blocks) if family != "unknown" else ()
    logger.info("architecture: %s (%d blocks)", family, len(blocks))
    return Architecture(family, blocks, reasons, {kind: tuple(names) for kind, names in (fused or {}).items()})


def recognise_architecture(model: onnx.ModelProto, input_name: str | None = None,
                           outputs: list[str] | None = None) -> Architecture:
    """Recognise the family of ``model`` as seen from ``input_name`` (default: its first input)."""
    view, fused = prepare_view(model, input_name, outputs)
    return recognise_view(view, fused)


def architecture_lines(architecture: dict[str, Any], max_blocks: int = 12) -> list[str]:
    """Human-readable lines for ``fimaudit inspect`` (a prepared dict, as in the JSON)."""
    counts = ", ".join(f"{count} {kind}" for kind, count in architecture.get("block_counts", {}).items())
    lines = [f"architecture: {architecture['family']}" + (f" ({counts})" if counts else "")]
    for block in architecture.get("blocks", [])[:max_blocks]:
        nodes = block["nodes"]
        shown = (
            f"{visible(nodes[0])} .. {visible(nodes[-1])}" if len(nodes) > 1 else (visible(nodes[0]) if nodes else "")
        )
        lines.append(f"  {block['kind']}: {len(nodes)} nodes, {shown}")
    hidden = len(architecture.get("blocks", [])) - max_blocks
    if hidden > 0:
        lines.append(f"  ... {hidden} more blocks")
    for family, reason in architecture.get("reasons", {}).items():
        lines.append(f"  not {family}: {visible(reason)}")
    return lines
