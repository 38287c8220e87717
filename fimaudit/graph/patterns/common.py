"""Building blocks shared by the family patterns: layer kinds, reachability, residuals, gates.

Everything here works on the varying part of a GraphView (tensors that depend on the input's
values): weights, shape arithmetic and masks never make a "branch" or a "shortcut".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from fimaudit.graph.onnx_utils import ints_attribute
from fimaudit.graph.view import GraphView

CONV_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}
DENSE_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}
NORM_OPS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
            "SimplifiedLayerNormalization", "RMSNormalization"}
ACTIVATION_OPS = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "Tanh", "Gelu",
                  "Silu", "HardSwish", "Mish", "Softplus", "Softsign", "Clip", "Erf", "ThresholdedRelu"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"}
FUSED_ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"}
# Ops that pass a value through a softmax-to-matmul path unchanged in meaning.
_PASS_THROUGH = {"Identity", "Dropout", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class Block:
    """One recognised unit: what it is, the exporter's node names, where it starts and ends.

    ``join`` names the residual Add that sums the block's branch and its shortcut (None for a
    block without one): the bounds report that Add's terms. It stays out of the JSON, whose
    ``details`` name the Add under each family's own key.
    """

    kind: str
    nodes: tuple[str, ...]
    input: str | None = None
    output: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    join: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (field names and order are the report's contract)."""
        return {"kind": self.kind, "nodes": list(self.nodes), "input": self.input, "output": self.output,
                "details": _plain(self.details)}


def _plain(value: Any) -> Any:
    """Mappings and tuples in block details as JSON's dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class PatternResult:
    """A family pattern's verdict on a graph: the blocks it found, or why it does not fit."""

    family: str
    blocks: tuple[Block, ...] | list[Block]
    reason: str | None = None

    @property
    def matched(self) -> bool:
        """The pattern fits the graph (no reason against it)."""
        return self.reason is None


def is_pooling(view: GraphView, node: onnx.NodeProto) -> bool:
    """MaxPool/AveragePool/global pools, and ReduceMean/ReduceMax over spatial axes (dynamo's GAP)."""
    if node.op_type in POOL_OPS:
        return True
    if node.op_type in ("ReduceMean", "ReduceMax"):
        shape = view.shape(node.input[0])
        axes = ints_attribute(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = view.const(node.input[1])
            axes = None if value is None else [int(a) for a in value.reshape(-1)]
        if shape is not None and axes is not None and len(shape) >= 3:
            spatial = set(range(2, len(shape)))
            return {a % len(shape) for a in axes} == spatial
    return False


def weighted_kind(view: GraphView, node: onnx.NodeProto) -> str | None:
    """'conv' or 'dense' for a layer with constant weights applied to a varying input, else None."""
    varying = view.varying_inputs(node)
    if node.op_type in CONV_OPS and varying == [0]:
        return "conv"
    if node.op_type == "Gemm" and len(varying) == 1 and varying[0] in (0, 1):
        return "dense"
    if node.op_type == "MatMul" and len(varying) == 1:
        return "dense"
    return None


class Reachability:
    """Which varying tensors each varying tensor depends on (bitsets over topological order)."""

    def __init__(self, view: GraphView) -> None:
        self.view = view
        self.index: dict[str, int] = {view.input_name: 0}
        self.position: dict[str, int] = {view.input_name: -1}
        self.masks: dict[str, int] = {view.input_name: 1}
        self.by_bit: list[str] = [view.input_name]  # index -> name, for latest_common
        for position, node in enumerate(view.nodes):
            inherited = 0
            for name in node.input:
                if name in self.masks:
                    inherited |= self.masks[name]
            for out in node.output:
                if out and out in view.varying:
                    bit = len(self.index)
                    self.index[out] = bit
                    self.by_bit.append(out)
                    self.position[out] = position
                    self.masks[out] = inherited | (1 << bit)

    def depends(self, later: str, earlier: str) -> bool:
        """True when ``later`` is ``earlier`` or computed from it."""
        if later not in self.masks or earlier not in self.index:
            return False
        return bool(self.masks[later] >> self.index[earlier] & 1)

    def latest_common(self, a: str, b: str) -> str | None:
        """The most recently computed tensor both ``a`` and ``b`` depend on (their fork)."""
        common = self.masks.get(a, 0) & self.masks.get(b, 0)
        if not common:
            return None
        return self.by_bit[common.bit_length() - 1]

    def between(self, start: str, end: str) -> list[onnx.NodeProto]:
        """Nodes on varying paths from ``start`` (exclusive) to ``end`` (inclusive).

        Only nodes placed between the two in topological order can be on such a path.
        """
        if start not in self.position or end not in self.position:
            return []
        found = []
        for node in self.view.nodes[self.position[start] + 1 : self.position[end] + 1]:
            outs = [out for out in node.output if out in self.masks]
            if any(out != start and self.depends(out, start) and self.depends(end, out) for out in outs):
                found.append(node)
        return found

    def has_weights_between(self, start: str, end: str) -> bool:
        """A weighted layer (conv, dense) lies on a varying path from ``start`` to ``end``: a branch, not a skip."""
        return any(weighted_kind(self.view, node) is not None for node in self.between(start, end))


def float_varying_inputs(view: GraphView, node: onnx.NodeProto) -> list[str]:
    """The node's input-dependent float inputs: the activations a pattern follows (not masks or indices)."""
    return [name for name in node.input if name and name in view.varying and view.is_float(name)]


@dataclass
class Residual:
    """y = branch(fork) + shortcut(fork): the add node, the fork, and both sides' nodes."""

    add: onnx.NodeProto
    fork: str
    branch: list[onnx.NodeProto]
    shortcut: list[onnx.NodeProto]

    @property
    def shortcut_kind(self) -> str:
        """'identity' when the shortcut has no node, else 'projection'."""
        return "identity" if not self.shortcut else "projection"


def _count_weighted(view: GraphView, nodes: list[onnx.NodeProto]) -> int:
    return sum(1 for node in nodes if weighted_kind(view, node) is not None)


def find_residuals(view: GraphView, reach: Reachability) -> list[Residual]:
    """Every Add of two varying tensors where one side is the fork itself or a short projection."""
    found = []
    for node in view.nodes:
        if node.op_type not in ("Add", "Sum"):
            continue
        operands = float_varying_inputs(view, node)
        if len(operands) != 2 or operands[0] == operands[1]:
            continue
        a, b = operands
        if reach.depends(b, a):
            fork, branch_end, short_end = a, b, a
        elif reach.depends(a, b):
            fork, branch_end, short_end = b, a, b
        else:
            common = reach.latest_common(a, b)
            if common is None:
                continue
            fork = common
            side_a, side_b = reach.between(fork, a), reach.between(fork, b)
            if _count_weighted(view, side_a) < _count_weighted(view, side_b):
                side_a, side_b, a, b = side_b, side_a, b, a
            if _count_weighted(view, side_b) > 1 or _count_weighted(view, side_a) < 1:
                continue
            found.append(Residual(node, fork, side_a, side_b))
            continue
        branch = reach.between(fork, branch_end)
        if _count_weighted(view, branch) < 1:
            continue
        found.append(Residual(node, fork, branch, reach.between(fork, short_end) if short_end != fork else []))
    return found


def find_gates(view: GraphView, reach: Reachability) -> list[onnx.NodeProto]:
    """Products of two varying tensors with weights on a side (squeeze-excitation gates).

    Products of weightless functions of one tensor (x * x, decomposed activations) are not gates.
    """
    gates = []
    for node in view.nodes:
        operands = float_varying_inputs(view, node)
        if node.op_type not in ("Mul", "Div") or len(operands) != 2:
            continue
        fork = reach.latest_common(*operands)
        if fork is None or any(reach.has_weights_between(fork, side) for side in operands):
            gates.append(node)
    return gates


def find_merges(view: GraphView, reach: Reachability) -> list[onnx.NodeProto]:
    """Nodes joining two varying tensors where a side holds weights (any skip connection or gate).

    Joins of weightless functions of one tensor (pooling decompositions) do not count.
    """
    merges = []
    for node in view.nodes:
        operands = list(dict.fromkeys(float_varying_inputs(view, node)))
        if len(operands) < 2 or node.op_type in ("MatMul", "Einsum"):
            continue
        for i, a in enumerate(operands):
            joined = False
            for b in operands[i + 1 :]:
                fork = reach.latest_common(a, b)
                if fork is None or reach.has_weights_between(fork, a) or reach.has_weights_between(fork, b):
                    joined = True
                    break
            if joined:
                merges.append(node)
                break
    return merges


# Elementwise ops an exporter puts between the attention scores, the softmax and the value
# product: scaling, additive masks (padding, causal, relative position bias), boolean masks
# (Where on a condition: DistilBERT's masked_fill, SDPA's NaN guard), multiplicative masks.
_MASKING = {"Mul", "Div", "Add", "Sub", "Where"}
_ATTENTION_STEPS = 8


def _is_product(view: GraphView, node: onnx.NodeProto) -> bool:
    return node.op_type in ("MatMul", "Einsum") and len(float_varying_inputs(view, node)) == 2


def _scores_behind(view: GraphView, name: str, steps: int = _ATTENTION_STEPS) -> onnx.NodeProto | None:
    """The product of two activations (q k^T) that ``name`` is computed from.

    The search crosses scaling, masking and pass-through ops; a mask operand (varying or not) is
    simply not followed.
    """
    node = view.producer.get(name)
    if node is None or steps == 0:
        return None
    if _is_product(view, node):
        return node
    if node.op_type in _PASS_THROUGH or node.op_type in _MASKING:
        for operand in float_varying_inputs(view, node):
            found = _scores_behind(view, operand, steps - 1)
            if found is not None:
                return found
    return None


def _context_after(view: GraphView, name: str, steps: int = _ATTENTION_STEPS) -> onnx.NodeProto | None:
    """The product of the attention weights ``name`` with another activation (weights v).

    The search crosses masking and pass-through ops; readers that make a non-float tensor from the
    weights (IsNaN, Equal: a mask's condition) are not the weights' path and are passed over.
    """
    if steps == 0:
        return None
    for node in view.consumers.get(name, []):
        if _is_product(view, node):
            return node
        if not node.output or not view.is_float(node.output[0]) or node.output[0] not in view.varying:
            continue
        if node.op_type in _PASS_THROUGH or node.op_type in _MASKING:
            found = _context_after(view, node.output[0], steps - 1)
            if found is not None:
                return found
    return None


def find_attention(view: GraphView) -> list[Block]:
    """Attention cores: MatMul(q, k) -> [scale, mask] -> Softmax -> [mask] -> MatMul(., v), or a fused op.

    Masks are Where on a condition, or added or multiplied tensors, on either side of the
    Softmax, whether or not they depend on the input (a padding mask computed from it).
    """
    blocks = []
    for node in view.nodes:
        if node.op_type in FUSED_ATTENTION_OPS and float_varying_inputs(view, node):
            fused_names = tuple(view.original_names(node))
            blocks.append(Block("attention", fused_names, node.input[0], node.output[0], {"fused_op": node.op_type}))
            continue
        if node.op_type != "Softmax" or node.input[0] not in view.varying:
            continue
        scores = _scores_behind(view, node.input[0])
        context = _context_after(view, node.output[0])
        if scores is None or context is None:
            continue
        names = [*view.original_names(scores), *view.original_names(node), *view.original_names(context)]
        blocks.append(Block("attention", tuple(names), scores.input[0], context.output[0], {"softmax": node.name}))
    return blocks
