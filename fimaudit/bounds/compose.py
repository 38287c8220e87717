"""Compose layer gains along the graph into a certified Lipschitz constant of x -> every tensor.

The walk visits nodes in topological order and keeps, for every input-dependent tensor t, a
number L(t) with ||t(x) - t(y)|| <= L(t) ||x - y|| (global mode) or ||dt/dx (x)|| <= L(t)
(local mode, at one sample). A node's rule gives gains g_i for its input-dependent inputs and
L(out) = sum_i g_i L(in_i) (or their l2 combination for Concat-like ops). This is exactly the
structural composition of the paper, generalised to any graph:
- a chain (VGG) multiplies the gains;
- a residual block y = x + f(x) gives L(y) = L(x) + L_f L(x) = (1 + L_f) L(x) (projection
  shortcut: (L_proj + L_f) L(x));
- a dense block y = [x, f(x)] gives sqrt(1 + L_f^2) L(x);
and every rule is homogeneous, so the block factors of a recognised structure can be read off
as L(block output) / L(block input).

A node with no rule, or whose rule cannot give a finite gain, makes every tensor after it
unknown (None): the result then has no bound and lists the problems. It is never skipped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from fimaudit.bounds.context import NodeContext
from fimaudit.bounds.registry import BoundUnavailable, LayerGain, get_rule, reads_values
from fimaudit.graph.view import GraphView

logger = logging.getLogger(__name__)

# Local gains read float32 activations (ONNX Runtime's); inflate them by this much to cover
# the rounding of those activations relative to the exact-arithmetic values at the sample.
LOCAL_MARGIN = 1e-5


@dataclass
class BoundProblem:
    """Why a node has no certified gain."""

    node: str
    op: str
    reason: str
    kind: str  # "no_rule", "unavailable", "discrete"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form, for the report's list of problems."""
        return {"node": self.node, "op": self.op, "kind": self.kind, "reason": self.reason}


@dataclass
class LayerRecord:
    """One node's contribution: its gains and the constant of everything up to its output."""

    node: str
    op: str
    nodes: list[str]
    gains: dict[str, float]
    combine: str
    method: str
    lipschitz: float | None
    assumption: str | None = None

    @property
    def gain(self) -> float:
        """The largest gain over the node's varying inputs (the one a report shows)."""
        return max(self.gains.values(), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: combine, nodes and assumption only where they say something."""
        entry: dict[str, Any] = {
            "node": self.node, "op": self.op, "gain": self.gain, "lipschitz": self.lipschitz, "method": self.method
        }
        if len(self.gains) > 1:
            entry["gains"] = dict(self.gains)
            entry["combine"] = self.combine
        if self.nodes != [self.node]:
            entry["nodes"] = self.nodes
        if self.assumption:
            entry["assumption"] = self.assumption
        return entry


@dataclass
class Propagation:
    """The outcome of one walk."""

    lipschitz: dict[str, float | None]
    magnitudes: dict[str, float]
    records: list[LayerRecord] = field(default_factory=list)
    problems: list[BoundProblem] = field(default_factory=list)

    def of(self, name: str) -> float | None:
        """The composed constant up to tensor ``name`` (None where none was certified)."""
        return self.lipschitz.get(name)


GainSource = Callable[[onnx.NodeProto], "LayerGain | BoundProblem"]


class BoundsCancelled(Exception):
    """The computation's owner no longer wants the result (an audit that failed or was interrupted).

    Not a FimauditError: it must not turn into a null bound with a reason.
    """


def _never() -> bool:
    return False


def _problem(node: onnx.NodeProto, reason: str, kind: str) -> BoundProblem:
    return BoundProblem(node.name, node.op_type, reason, kind)


class BoundEngine:
    """Global and per-sample walks over one GraphView, sharing the (costly) global gains."""

    def __init__(self, view: GraphView, input_magnitude: float = math.inf) -> None:
        self.view = view
        self.input_magnitude = input_magnitude
        self._global: dict[str, LayerGain | BoundProblem] = {}
        self.global_result: Propagation | None = None
        # Set by a background computation (bounds/background.py): checked before every rule, so
        # an audit that stops early does not leave a thread deriving spectral norms behind it.
        self.cancelled: Callable[[], bool] = _never

    # -------------------------------------------------------------- what to probe

    def varying_nodes(self) -> list[onnx.NodeProto]:
        """Nodes with an input-dependent output: the ones a bound walks over."""
        return [node for node in self.view.nodes if any(o in self.view.varying for o in node.output if o)]

    def value_tensors(self) -> list[str]:
        """Tensors the local rules read (inputs and outputs of value-reading ops)."""
        names: list[str] = []
        for node in self.varying_nodes():
            if reads_values(NodeContext(node, self.view)):
                names.extend(n for n in [*node.input, *node.output] if n and n not in self.view.constants)
        return list(dict.fromkeys(names))

    def unknown_constant_tensors(self) -> list[str]:
        """Computed tensors, independent of the input's values, that input-dependent nodes read unfolded.

        Shape arithmetic and scales derived from shapes, say: a probe run reads them.
        """
        names: list[str] = []
        external = self.view.external_inputs
        for node in self.varying_nodes():
            for name in node.input:
                if (
                    name
                    and name not in self.view.varying
                    and name not in self.view.constants
                    and name not in external
                    and name in self.view.producer
                ):
                    names.append(name)
        return list(dict.fromkeys(names))

    def unknown_shape_tensors(self) -> list[str]:
        """Input-dependent tensors (and computed non-constant inputs) whose shape is unknown."""
        names: list[str] = []
        for node in self.varying_nodes():
            for name in [*node.input, *node.output]:
                if name and name not in self.view.constants and self.view.shape(name) is None:
                    names.append(name)
        return list(dict.fromkeys(names))

    # -------------------------------------------------------------- gains

    def _rule_gain(
        self, node: onnx.NodeProto, mode: str, values: dict[str, np.ndarray], magnitudes: dict[str, float]
    ) -> LayerGain | BoundProblem:
        if self.cancelled():
            raise BoundsCancelled(f"bounds cancelled before node {node.name!r}")
        rule = get_rule(node.op_type)
        if rule is None:
            return _problem(node, f"no bound rule for {node.op_type} (node {node.name!r})", "no_rule")
        context = NodeContext(node, self.view, mode, values, magnitudes)
        try:
            gain = rule(context)
        except BoundUnavailable as exc:
            return _problem(node, str(exc), "unavailable")
        missing = [i for i in self.view.varying_inputs(node) if i not in gain.gains]
        if missing:
            return _problem(node, f"the {node.op_type} rule gave no gain for input(s) {missing}", "unavailable")
        return gain

    def global_gain(self, node: onnx.NodeProto, magnitudes: dict[str, float] | None = None) -> LayerGain | BoundProblem:
        """The node's gain over all inputs, or why there is none (cached: every per-sample walk reuses it)."""
        if node.name not in self._global:
            self._global[node.name] = self._rule_gain(node, "global", {}, magnitudes or {})
        return self._global[node.name]

    def global_gains(self) -> dict[str, LayerGain | BoundProblem]:
        """Every global gain computed so far, by node name (what ``bounds/stored.py`` keeps on disk)."""
        return dict(self._global)

    def preload(self, gains: dict[str, LayerGain | BoundProblem]) -> None:
        """Take global gains derived before (the same view and input domain); the walk then skips their rules."""
        self._global.update(gains)

    def local_gain(self, node: onnx.NodeProto, values: dict[str, np.ndarray]) -> LayerGain | BoundProblem:
        """The local rule's gain (inflated by LOCAL_MARGIN), never above the global one."""
        cached = self.global_gain(node)
        if not reads_values(NodeContext(node, self.view)):
            return cached
        local = self._rule_gain(node, "local", values, self.global_result.magnitudes if self.global_result else {})
        if isinstance(local, BoundProblem):
            return cached
        inflated = {i: g * (1.0 + LOCAL_MARGIN) for i, g in local.gains.items()}
        if isinstance(cached, BoundProblem):
            return LayerGain(
                inflated, local.method, local.combine, local.magnitude, local.assumption, outputs=local.outputs
            )
        gains = {i: min(inflated[i], cached.gains.get(i, math.inf)) for i in inflated}
        tighter = any(inflated[i] < cached.gains.get(i, math.inf) for i in inflated)
        if not tighter:
            return cached
        return LayerGain(gains, local.method, local.combine, cached.magnitude, local.assumption, outputs=local.outputs)

    # -------------------------------------------------------------- walks

    def walk(self, gain_of: GainSource, sources: dict[str, float], nodes: list[onnx.NodeProto] | None = None,
             magnitudes: dict[str, float] | None = None, default: float | None = None) -> Propagation:
        """Propagate constants from ``sources`` through ``nodes`` (default: the whole graph).

        Input-dependent tensors not reached from the sources take ``default`` (0 for a block
        walk, where they are fixed with respect to the block input; None otherwise).
        """
        view = self.view
        lipschitz: dict[str, float | None] = dict(sources)
        result = Propagation(lipschitz, magnitudes if magnitudes is not None else {})
        for node in nodes if nodes is not None else view.nodes:
            outputs = [o for o in node.output if o and o in view.varying]
            if not outputs:
                continue
            varying = view.varying_inputs(node)
            gain = gain_of(node)
            if isinstance(gain, BoundProblem):
                result.problems.append(gain)
                for out in outputs:
                    lipschitz[out] = None
                continue
            terms: list[float] = []
            unknown = False
            for index in varying:
                name = node.input[index]
                value = lipschitz.get(name, default)
                if value is None:
                    unknown = True
                    if name not in lipschitz and not view.is_float(name):
                        result.problems.append(
                            _problem(node, f"input {name!r} is an input-dependent integer tensor", "discrete")
                        )
                    continue
                terms.append(gain.gains[index] * value)
            if unknown:
                out_value: float | None = None
            elif gain.combine == "l2":
                out_value = math.sqrt(sum(t * t for t in terms))
            else:
                out_value = sum(terms)
            for position, out in enumerate(node.output):
                if out not in outputs:
                    continue
                covered = gain.outputs is None or position in gain.outputs
                lipschitz[out] = out_value if view.is_float(out) and covered else None
                result.magnitudes[out] = gain.magnitude if covered else math.inf
                if not covered and view.consumers.get(out):
                    reason = (
                        f"output {position} of {node.op_type} node {node.name!r} is used, "
                        f"and its rule covers only output(s) {list(gain.outputs or [])}"
                    )
                    result.problems.append(_problem(node, reason, "unavailable"))
            result.records.append(LayerRecord(
                node.name, node.op_type, view.original_names(node),
                {node.input[i]: gain.gains[i] for i in varying}, gain.combine, gain.method, out_value, gain.assumption,
            ))
        return result

    def run_global(self) -> Propagation:
        """Constants valid for every input (in the domain given by ``input_magnitude``)."""
        magnitudes: dict[str, float] = {self.view.input_name: self.input_magnitude}
        result = self.walk(
            lambda node: self.global_gain(node, magnitudes), {self.view.input_name: 1.0}, magnitudes=magnitudes
        )
        self.global_result = result
        return result

    def run_local(self, values: dict[str, np.ndarray]) -> Propagation:
        """Bounds on the Jacobian norms at one sample (``values``: its probed activations)."""
        if self.global_result is None:
            self.run_global()
        return self.walk(lambda node: self.local_gain(node, values), {self.view.input_name: 1.0})

    def block_factor(self, start: str, end: str) -> float | None:
        """L(end) / L(start) from the global walk: the block's growth factor."""
        if self.global_result is None:
            return None
        low, high = self.global_result.of(start), self.global_result.of(end)
        if low is None or high is None or low == 0.0:
            return None
        return high / low


# ------------------------------------------------------------------ per-family compositions

GATE_UNBOUNDED = ("the squeeze-excitation product x * g(x) has no global Lipschitz constant on an unbounded "
                  "domain: its Jacobian diag(g) + diag(x) dg/dx grows with ||x|| (a channel of zero mean and "
                  "growing norm leaves g unchanged), so a global bound needs a bounded input domain")


@dataclass(frozen=True)
class GateFactor:
    """Lipschitz constant of the gated product y = x * g(x) with respect to x (SE block).

    dy = g * dx + x * B dg (B: the gate's per-channel broadcast over the spatial entries), so
    ||dy|| <= sup|g| ||dx|| + max_c ||x_c|| ||dg|| <= (sup|g| + max_c ||x_c|| L_g) ||dx||:
    ``sup_gate`` bounds |g| (1 for Sigmoid and HardSigmoid), ``features_size`` bounds
    max_c ||x_c||_2 over the domain (sqrt(entries per channel) times max |x|), ``gate_lipschitz``
    is the composed constant of x -> g. The first term is the identity part (||I|| sup g), the
    second the part that grows with the activations.
    """

    sup_gate: float
    features_size: float
    gate_lipschitz: float

    @property
    def value(self) -> float:
        """The gate factor sup|g| + max_c ||x_c|| L_g (inf when a term is unbounded)."""
        return self.sup_gate + self.features_size * self.gate_lipschitz

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready terms and factor (non-finite values as None: JSON has no Infinity)."""
        finite = math.isfinite(self.value)
        features_size = self.features_size if math.isfinite(self.features_size) else None
        return {"sup_gate": self.sup_gate, "features_size": features_size,
                "gate_lipschitz": self.gate_lipschitz, "factor": self.value if finite else None}


def _nodes_between(view: GraphView, start: str, end: str) -> list[onnx.NodeProto]:
    """Nodes placed after ``start``'s producer up to ``end``'s producer (a block walk's range)."""
    position = {out: index for index, node in enumerate(view.nodes) for out in node.output if out}
    first = position.get(start, -1) + 1
    last = position.get(end)
    return [] if last is None else view.nodes[first : last + 1]


def block_walk(engine: BoundEngine, start: str, end: str) -> float | None:
    """Lipschitz constant of start -> end, composed from the global gains over the nodes between them.

    Tensors not computed from ``start`` are held fixed: this is the block's own constant.
    """
    view = engine.view
    magnitudes = engine.global_result.magnitudes if engine.global_result is not None else {}
    walked = engine.walk(lambda node: engine.global_gain(node, magnitudes), {start: 1.0},
                         _nodes_between(view, start, end), magnitudes=dict(magnitudes), default=0.0)
    return walked.of(end)


def gate_factor(engine: BoundEngine, features: str, gate: str) -> GateFactor | None:
    """The :class:`GateFactor` of x * g(x) from the global walk (None when x -> g has no bound)."""
    from fimaudit.bounds.linalg import broadcast_copies

    if engine.global_result is None:
        engine.run_global()
    assert engine.global_result is not None
    lipschitz = block_walk(engine, features, gate)
    if lipschitz is None:
        return None
    view = engine.view
    sup_gate = engine.global_result.magnitudes.get(gate, math.inf)
    features_shape, gate_shape = view.shape(features), view.shape(gate)
    per_channel = broadcast_copies(gate_shape, features_shape) if features_shape and gate_shape else math.inf
    size = engine.global_result.magnitudes.get(features, math.inf) * math.sqrt(per_channel)
    return GateFactor(sup_gate, size, lipschitz)


def inverted_residual_factor(engine: BoundEngine, block: Any) -> dict[str, Any]:
    """The mobilenet block's composed constant, JSON-ready.

    The constant is

        L(block) <= [1 +] L(project after gate) * (sup g + max_c ||x_c|| L_g) * L(expand, depthwise)

    (the 1 for an identity residual). Without a gate it is the residual 1 + L_branch. When the
    gate's second term is unbounded the factor is null with ``GATE_UNBOUNDED`` as reason; it is
    never replaced by a smaller number.
    """
    details = block.details
    se = details.get("squeeze_excitation")
    residual = 1.0 if block.join else 0.0
    end = block.output
    entry: dict[str, Any] = {"formula": ("[1 +] L_project (sup g + max_c ||x_c|| L_g) L_depthwise L_expand" if se
                                         else "[1 +] L_project L_depthwise L_expand"),
                             "residual": bool(block.join)}
    if block.input is None or end is None:
        return {**entry, "factor": None, "reason": "the block's input or output is unknown"}
    if block.join:  # the branch ends at the Add's other operand
        view = engine.view
        join = next((n for n in view.nodes if n.name == block.join), None)
        operands = [] if join is None else [name for name in join.input if name in view.varying and name != block.input]
        end = operands[0] if operands else end
    if not se:
        branch = block_walk(engine, block.input, end)
        return {**entry, "factor": None if branch is None else residual + branch}
    gate = gate_factor(engine, se["features"], se["gate_tensor"])
    before = block_walk(engine, block.input, se["features"])
    mul = next((n for n in engine.view.nodes if n.name == se["mul"]), None)
    after = None if mul is None else block_walk(engine, mul.output[0], end)
    entry["gate"] = None if gate is None else gate.to_dict()
    if gate is None or before is None or after is None:
        return {**entry, "factor": None, "reason": "a part of the block has no certified constant"}
    if not math.isfinite(gate.value):
        return {**entry, "factor": None, "reason": GATE_UNBOUNDED}
    return {**entry, "factor": residual + after * gate.value * before}
