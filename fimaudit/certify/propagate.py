"""One pass forward (certified ranges of every activation) and one backward (interval Jacobian rows).

The graph is the audit's logits model (fimaudit's output selection already cut a final Softmax,
so the rows are d logits / d input) seen through ``GraphView`` (constants folded, the varying set
known). Forward, every node that depends on the input is handed to its rule in topological order;
a node without a rule stops the certificate (``NotCertified``). Backward, the K rows start at the
logits as the rows of ``combination`` (exact: radius 0) and walk the same nodes in reverse; a
tensor read by several nodes sums their contributions (its producer comes after all its readers
in the reverse order, so its rows are complete when they are used).

Forward mode tightens every box by the mean value theorem, in two ways whose ranges are met: at x
with deviation symbols (symbols.py: d + symbols signed rows per tensor, the only one that fits a
3x32x32 network), and, while d x tensor size stays under ``TANGENT_LIMIT``, the interval Jacobian
over the set (centre and radius per direction; on small models it sometimes wins, e.g. where a
handful of unstable max-pool windows sit near the logits). Each also yields deviation bounds on
the logits' Jacobian; the composition takes the smallest.

Rounding: ranges over the set are rounded outward (intervals.py), but the value at x itself is
computed once in float64 and trusted to 1e-12 relative (``_tighten``, ``_point``): bounding its
rounding by interval arithmetic would amplify 1e-16 by |W| at every layer. This is the one
assumption about floating point the certificates make (docs/CERTIFICATES.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fimaudit.certify.intervals import Ball, Box, Cotangent, gamma, outward
from fimaudit.certify.registry import (
    CertifyRule,
    NodeContext,
    NotCertified,
    get_rule,
    moves_of,
    slopes_at_x,
    supported_ops,
)
from fimaudit.certify.symbols import STACK_LIMIT, Linearised, SymbolDeviation, Unsupported

if TYPE_CHECKING:  # telescoping.py imports backward_from from here
    from fimaudit.certify.telescoping import Telescope
from fimaudit.graph.view import GraphView


@dataclass(frozen=True)
class InputSet:
    """The set certified: the ``norm`` ball of radius ``eps`` around ``centre``, met with [low, high]."""

    centre: np.ndarray
    eps: float
    norm: float
    low: float = -np.inf
    high: float = np.inf

    def box(self) -> Box:
        """The input as a box (each coordinate moves at most eps in both norms) with its ball."""
        x = np.asarray(self.centre, dtype=np.float64)
        lo = np.maximum(x - self.eps, self.low)
        hi = np.minimum(x + self.eps, self.high)
        lo, hi = np.minimum(lo, x), np.maximum(hi, x)
        return Box(x, lo, hi, Ball(x, float(self.eps), float(self.norm)))


@dataclass
class Propagation:
    """What one certificate needs: the logits' box, the interval Jacobian rows, the unstable count.

    ``rows`` is the interval Jacobian (backward over the set); ``telescopes`` the two orderings of
    telescoping.py (empty when forward mode was not available).
    """

    logits: Box
    rows: Cotangent  # [K', *input shape]
    unstable: int
    telescopes: tuple[Telescope | SymbolDeviation, ...] = ()

    def deviation(self, weights: np.ndarray | None = None) -> float:
        """Certified ||diag(w) (J~(x') - J~(x))||_2 over the set from telescoping (inf when not available)."""
        return min((telescope.bound(weights) for telescope in self.telescopes), default=math.inf)

    @property
    def telescoped(self) -> float:
        """The unweighted deviation bound."""
        return self.deviation()


#: Forward mode carries d directions per tensor: used while d x (tensor size) stays below this
#: (ResNet-18 at 3x32x32, 3072 x 16384 over it, took over 15 min and 6 GB on 2 shared cores).
TANGENT_LIMIT = 1 << 25


def _readers(nodes: list) -> dict[str, int]:
    """How many nodes read each tensor (a tensor's directions are dropped after its last reader)."""
    counts: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            if name:
                counts[name] = counts.get(name, 0) + 1
    return counts


def _relaxed_inputs(nodes: list) -> set[str]:
    """Tensors read by a node whose rule relaxes its remainder (symbols.py refines their ranges)."""
    names = set()
    for node in nodes:
        rule = get_rule(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is not None and type(rule).relaxation is not CertifyRule.relaxation and node.input:
            names.add(node.input[0])
    return names


def _finished(node, readers: dict[str, int], keep: str) -> list[str]:
    """The node's inputs that no later node reads, counted down in ``readers`` (``keep`` never is).

    Forward mode drops their directions (memory: d x size each); one count serves both modes.
    """
    done = []
    for name in node.input:
        if name and name in readers:
            readers[name] -= 1
            if readers[name] == 0 and name != keep:
                done.append(name)
    return done


def _drop(directions: dict[str, Cotangent] | None, names: list[str]) -> None:
    """Forget the directions of ``names`` (nothing when interval forward mode is not running)."""
    if directions is not None:
        for name in names:
            directions.pop(name, None)


def _moving_inputs(rule, ctx: NodeContext, ins: list[Cotangent | None]) -> list[Cotangent | None] | None:
    """The directions a nonlinear node's telescoping term needs: only the entries that can move.

    None for a node whose Jacobian never changes (affine, reshapes).
    """
    moves = moves_of(rule, ctx)
    if moves is None:
        return [None] * len(ins)
    if moves.fixed:
        return None
    if moves.selection is not None:
        masks = {0: moves.selection.candidates.reshape(-1)}
    else:
        masks = {index: spread.reshape(-1) > 0 for index, spread in moves.diagonal}
    kept: list[Cotangent | None] = []
    for index, rows in enumerate(ins):
        if rows is None or index not in masks:
            kept.append(None)
            continue
        n = rows.centre.shape[0]
        kept.append(Cotangent(rows.centre.reshape(n, -1)[:, masks[index]], rows.radius.reshape(n, -1)[:, masks[index]]))
    return kept


def _tighten(box: Box, rows: Cotangent, inputs: InputSet) -> Box:
    """Mean value theorem per entry: |h_i(x') - h_i(x)| <= eps (||c_i||_q + ||r_i||_q) on the convex set."""
    q = 1.0 if np.isinf(inputs.norm) else 2.0
    scale = np.linalg.norm(rows.centre, ord=q, axis=0) + np.linalg.norm(rows.radius, ord=q, axis=0)
    width = inputs.eps * scale * (1.0 + gamma(rows.centre.shape[0] + 2))
    slack = 1e-12 * (np.abs(box.at) + width)  # the value at x is itself a float64 computation
    return box.intersect(*outward(box.at - width, box.at + width, slack))


def _point(box: Box) -> Box:
    """At eps = 0 the set is x alone: the value at x with the same relative slack as ``_tighten``.

    Interval arithmetic would otherwise widen the point by its own rounding bounds, amplified by
    |W| layer after layer: on an 18-layer network that alone makes every ReLU look unstable.
    """
    slack = 1e-12 * np.abs(box.at)
    return Box(box.at, *outward(box.at, box.at, slack))


@dataclass
class Forward:
    """The forward pass: boxes, node contexts, and (forward mode) the directions nonlinear nodes read."""

    boxes: dict[str, Box]
    contexts: list[NodeContext]
    #: node name -> directions of each of its inputs (None: constant), for nodes whose Jacobian moves
    upstream: dict[str, list[Cotangent | None]] | None
    #: directions of the logits (None when forward mode stopped at TANGENT_LIMIT)
    logits_rows: Cotangent | None
    #: forward mode at x with deviation symbols (symbols.py), when it ran to the logits
    linearised: Linearised | None = None


def forward(view: GraphView, logits: str, inputs: InputSet, tangents: bool = True,
            stack_limit: int = STACK_LIMIT) -> Forward:
    """Boxes of every input-dependent tensor, and each node's context (kept for the backward pass).

    With ``tangents`` (and while they fit ``TANGENT_LIMIT``), every tensor also carries its
    interval Jacobian in forward mode, and its box is tightened by the mean value theorem: the
    first-order range, whose width shrinks with eps at the rate of the true gradient instead of
    the product of |W| that interval arithmetic pays.
    """
    first = inputs.box()
    boxes: dict[str, Box] = {view.input_name: first}
    contexts: list[NodeContext] = []
    size = first.at.size
    directions: dict[str, Cotangent] | None = None
    upstream: dict[str, list[Cotangent | None]] | None = {}
    readers = _readers(view.nodes)
    relaxed = _relaxed_inputs(view.nodes)
    linearised: Linearised | None = None
    tangent_limit = 0
    if tangents and inputs.eps > 0:
        try:
            linearised = Linearised.start(view.input_name, first.at, inputs.eps, inputs.norm, stack_limit)
        except Unsupported:
            linearised = None
        tangent_limit = min(TANGENT_LIMIT, stack_limit // 2)  # centre and radius: two arrays per tensor
        if size * size <= tangent_limit:
            eye = np.eye(size).reshape((size, *first.at.shape))
            directions = {view.input_name: Cotangent(eye, np.zeros_like(eye))}
    for node in view.nodes:
        finished = _finished(node, readers, logits)
        if not any(name in boxes for name in node.input if name) or not any(
            out in view.varying for out in node.output if out
        ):  # constant (folded by the view), fed only by other fixed inputs, or reading only a shape
            _drop(directions, finished)
            if linearised is not None:
                linearised.drop(finished)
            continue
        rule = get_rule(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            raise NotCertified(
                f"not certified: op {node.op_type} at node {node.name!r} has no certify rule "
                f"(certified ops: {', '.join(supported_ops())})"
            )
        ctx = NodeContext(node, view, [boxes.get(name) if name else None for name in node.input])
        results = rule.forward(ctx)
        if inputs.eps == 0.0:  # the point itself: no set to propagate (module docstring)
            results = [_point(box) for box in results]
        else:
            box = results[0]
            if directions is not None and size * box.at.size > tangent_limit:
                directions = upstream = None
            if directions is not None:  # interval forward mode over the set, while it fits
                ins = [directions.get(name) if name else None for name in node.input]
                kept = _moving_inputs(rule, ctx, ins) if upstream is not None else None
                if upstream is not None and kept is not None:
                    upstream[node.name] = kept
                rows = rule.tangent(ctx, ins)
                del ins
                _drop(directions, finished)
                directions[node.output[0]] = rows
                box = _tighten(box, rows, inputs)
            if linearised is not None:  # forward mode at x with deviation symbols (symbols.py)
                try:
                    box = linearised.step(rule, ctx, box, finished, node.output[0] in relaxed)
                except Unsupported:
                    linearised = None
            results = [box, *results[1:]]
        for name, box in zip([out for out in node.output if out], results, strict=False):
            if not (np.all(np.isfinite(box.lo)) and np.all(np.isfinite(box.hi))):
                raise NotCertified(
                    f"not certified: the range of {name!r} (op {node.op_type} at node {node.name!r}) is not "
                    "finite over the set"
                )
            boxes[name] = box
        contexts.append(ctx)
    if logits not in boxes:
        raise NotCertified(f"not certified: the logits {logits!r} do not depend on the input {view.input_name!r}")
    if directions is None:
        upstream = None
    if linearised is not None and logits not in linearised.stacks:
        linearised = None
    return Forward(boxes, contexts, upstream, directions.get(logits) if directions is not None else None,
                   linearised)


def backward(contexts: list[NodeContext], boxes: dict[str, Box], logits: str, input_name: str,
             combination: np.ndarray, record: dict[str, Cotangent] | None = None) -> Cotangent:
    """The rows combination @ d logits / d input over the set (centre at x, radius).

    ``record``, when given, receives the rows at the output of every node (by node name).
    """
    shape = boxes[logits].at.shape
    start = combination.reshape((combination.shape[0], *shape)).astype(np.float64)
    rows = backward_from(contexts, logits, Cotangent(start, np.zeros_like(start)), record)
    if input_name not in rows:
        zero = np.zeros((combination.shape[0], *boxes[input_name].at.shape))
        return Cotangent(zero, zero.copy())
    return rows[input_name]


def backward_from(contexts: list[NodeContext], name: str, start: Cotangent,
                  record: dict[str, Cotangent] | None = None) -> dict[str, Cotangent]:
    """Rows of d(tensor ``name``)/d(every tensor before it): the backward walk from any tensor.

    Returns the rows still pending at the end (those of the graph's inputs).
    """
    pending: dict[str, Cotangent] = {name: start}
    for ctx in reversed(contexts):
        node = ctx.node
        outputs = [out for out in node.output if out]
        rows = pending.pop(outputs[0], None) if outputs else None
        if rows is None:
            continue
        if record is not None:
            record[node.name] = rows
        if any(out in pending for out in outputs[1:]):
            raise NotCertified(f"not certified: op {node.op_type} at node {node.name!r}: only its first output "
                               "may lead to the logits")
        rule = get_rule(node.op_type)
        assert rule is not None  # the forward pass refused nodes without a rule
        for index, contribution in rule.backward(ctx, rows).items():
            name = node.input[index]
            source = node.input[index]
            pending[source] = pending[source].add(contribution) if source in pending else contribution
    return pending


def unstable_count(contexts: list[NodeContext]) -> int:
    """Activations (and max-pool windows) whose slope can change over the set."""
    total = 0
    for ctx in contexts:
        rule = get_rule(ctx.node.op_type)
        counter = getattr(rule, "unstable", None)
        if counter is not None:
            total += int(counter(ctx))
    return total


def propagate(view: GraphView, logits: str, inputs: InputSet,
              combination: Callable[[np.ndarray], np.ndarray], stack_limit: int = STACK_LIMIT) -> Propagation:
    """Forward and backward over ``inputs``; ``combination(logits at x)`` gives the rows to propagate.

    Two backward passes: over the set (the interval Jacobian) and at x alone (slopes fixed at
    their values at x: the rows each nonlinear node's deviation is multiplied by, telescoping.py).
    """
    ahead = forward(view, logits, inputs, stack_limit=stack_limit)
    boxes, contexts = ahead.boxes, ahead.contexts
    matrix = combination(boxes[logits].at.reshape(-1))
    over_set: dict[str, Cotangent] = {}
    rows = backward(contexts, boxes, logits, view.input_name, matrix, over_set)
    if ahead.logits_rows is not None:
        rows = _meet(rows, ahead.logits_rows, matrix)
    return Propagation(boxes[logits], rows, unstable_count(contexts),
                       _telescopes(view, contexts, ahead, logits, matrix, over_set))


def _telescopes(view: GraphView, contexts: list[NodeContext], ahead: Forward, logits: str, matrix: np.ndarray,
                over_set: dict[str, Cotangent]) -> tuple[Telescope | SymbolDeviation, ...]:
    """Every deviation bound the forward modes that ran allow (the composition takes the smallest).

    Both telescoping orderings need A_t at x (one backward pass with every slope at x) and B_t at
    x on the moving entries: kept by the symbol pass when it ran, else one more forward pass at x.
    Ordering (1) takes beta_t over the set from the symbol pass's gradient bounds and, when
    interval forward mode ran, from its enclosure too; both refine it recursively (slopes at x).
    """
    from fimaudit.certify.telescoping import telescoped_radius

    linearised, upstream = ahead.linearised, ahead.upstream
    if linearised is None and upstream is None:
        return ()
    telescopes: list[Telescope | SymbolDeviation] = []
    recorded: dict[str, Cotangent] = {}
    with slopes_at_x(contexts):
        at_x = backward(contexts, ahead.boxes, logits, view.input_name, matrix, recorded)
        if linearised is not None:
            upstream_at_x = linearised.at_x
            telescopes.append(telescoped_radius(contexts, upstream_at_x, recorded, at_x, upstream_at_x,
                                                betas=linearised.betas))
        else:
            assert upstream is not None
            upstream_at_x = _directions_at_x(view, contexts, ahead.boxes, set(upstream))
        if upstream is not None:  # A_t at x, B_t over the set from interval forward mode
            telescopes.append(telescoped_radius(contexts, upstream, recorded, at_x, upstream_at_x))
    telescopes.append(telescoped_radius(contexts, upstream_at_x, over_set, at_x))  # A_t over the set, B_t at x
    if linearised is not None:
        telescopes.append(linearised.deviation(logits, matrix))
    return tuple(telescopes)


def _directions_at_x(view: GraphView, contexts: list[NodeContext], boxes: dict[str, Box],
                     wanted: set[str]) -> dict[str, list[Cotangent | None]]:
    """Forward mode with every slope at its value at x (the caller holds ``slopes_at_x``): B_t(x).

    The radius is then the rounding alone; telescoping.py's second ordering pairs these with the
    rows over the set.
    """
    first = boxes[view.input_name].at
    eye = np.eye(first.size).reshape((first.size, *first.shape))
    directions = {view.input_name: Cotangent(eye, np.zeros_like(eye))}
    kept: dict[str, list[Cotangent | None]] = {}
    readers = _readers([ctx.node for ctx in contexts])
    for ctx in contexts:
        rule = get_rule(ctx.node.op_type)
        assert rule is not None
        ins = [directions.get(name) if name else None for name in ctx.node.input]
        if ctx.node.name in wanted:
            moving = _moving_inputs(rule, ctx, ins)
            if moving is not None:
                kept[ctx.node.name] = moving
        rows = rule.tangent(ctx, ins)
        del ins
        _drop(directions, _finished(ctx.node, readers, ""))
        directions[ctx.node.output[0]] = rows
    return kept


def _meet(rows: Cotangent, directions: Cotangent, matrix: np.ndarray) -> Cotangent:
    """The backward rows met with the forward-mode ones mapped through P (both enclose P J').

    Forward mode gives d x K directions of the logits; P times them encloses the same rows with
    centre P c_f and radius |P| r_f. Around the backward centre, the meet has radius
    min(r_b, |P| r_f + |c_b - P c_f|).
    """
    k = matrix.shape[0]
    centre_f = np.tensordot(matrix, directions.centre.reshape(directions.centre.shape[0], -1).T, axes=1)
    radius_f = np.tensordot(np.abs(matrix), directions.radius.reshape(directions.radius.shape[0], -1).T, axes=1)
    radius_f = radius_f * (1.0 + gamma(matrix.shape[1] + 1))
    centre_b = rows.centre.reshape(k, -1)
    other = radius_f + np.abs(centre_b - centre_f)
    other = np.nextafter(other, np.inf)
    radius = np.minimum(rows.radius.reshape(k, -1), other).reshape(rows.radius.shape)
    return Cotangent(rows.centre, radius)
