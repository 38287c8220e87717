"""A norm bound on J(x') - J(x) that pays for each unstable activation once, not through |W|.

The interval Jacobian pushes every slope uncertainty through |W|^T to the input, which loses all
sign cancellation: on conv nets a handful of unstable ReLUs inflate the radius by orders of
magnitude. Telescoping over the nonlinear nodes in topological order instead (the Jacobian is
multilinear in the nodes' local Jacobians) gives exactly

    J(x') - J(x) = sum_t A_t (S_t(x') - S_t(x)) B_t(x'),                        (1)

with A_t = d(rows)/d(output of t) with every node after t at x, S_t the node's local Jacobian
(diagonal for an activation: its slopes) and B_t(x') = d(input of t)/d(input) with every node
before t at x'. The mirror ordering, A_t over the set and B_t at x, holds as well (2). Hence

    ||J(x') - J(x)||_2 <= sum_t || A_t M_t ||_2 beta_t,   beta_t >= ||B_t restricted to U_t||_2,

U_t the entries whose slope can move and M_t their largest moves. For (1), beta_t is the smaller
of the interval enclosure's norm and, recursively, ||B_t(x)|| plus (1) applied to the sub-network
that ends at t's input (a backward pass from the |U_t| entries, slopes at x: RecurJac's idea
with norms). For max pooling, S_t(x') - S_t(x) has one +1 and one -1 per changing window, so its
norm is at most sqrt(2 w), w the most windows one input belongs to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fimaudit.certify.composition import spectral_norm_bound
from fimaudit.certify.intervals import Cotangent
from fimaudit.certify.registry import NodeContext, get_rule, moves_of

#: A recursive refinement runs one backward pass with this many rows at most.
ROW_LIMIT = 128


@dataclass
class Edge:
    """One input of a nonlinear node whose local Jacobian can move over the set."""

    node: str
    index: int
    moving: np.ndarray  # flat mask over the input's entries (U_t)
    weight: np.ndarray | None  # M_t on the moving entries (None: max pooling)
    outputs: np.ndarray | None  # max pooling: the changing windows
    factor: float  # max pooling: sqrt(2 w); 1 otherwise
    beta: float = math.inf


def _rows(cotangent: Cotangent) -> tuple[np.ndarray, np.ndarray]:
    n = cotangent.centre.shape[0]
    return cotangent.centre.reshape(n, -1), cotangent.radius.reshape(n, -1)


def _norm(directions: Cotangent, entries: np.ndarray) -> float:
    """||B|| over the selected entries for B in [B_c +- B_r]: the signed centre's norm plus the radius's.

    ``directions`` may already hold only the selected entries (propagate.py keeps no more).
    """
    centre, radius = _rows(directions)
    if centre.shape[1] != entries.size:
        assert centre.shape[1] == int(entries.sum())
        return spectral_norm_bound(centre) + spectral_norm_bound(radius)
    return spectral_norm_bound(centre[:, entries]) + spectral_norm_bound(radius[:, entries])


def edges_of(contexts: list[NodeContext], upstream: dict[str, list[Cotangent | None]]) -> list[Edge] | None:
    """Every moving edge in topological order (None when some node's change has no such form)."""
    edges: list[Edge] = []
    for ctx in contexts:
        inputs = upstream.get(ctx.node.name)
        if inputs is None:
            continue
        rule = get_rule(ctx.node.op_type)
        assert rule is not None
        moves = moves_of(rule, ctx)
        if moves is None:
            return None
        chosen = moves.selection
        if chosen is not None:
            if chosen.outputs.any():
                edges.append(Edge(ctx.node.name, 0, chosen.candidates.reshape(-1), None, chosen.outputs.reshape(-1),
                                  math.sqrt(2.0 * chosen.overlap)))
            continue
        for index, spread in moves.diagonal:
            flat = spread.reshape(-1)
            moving = flat > 0
            if moving.any() and inputs[index] is not None:
                edges.append(Edge(ctx.node.name, index, moving, flat[moving], None, 1.0))
    return edges


def _term(edge: Edge, rows: Cotangent | None, weights: np.ndarray | None = None) -> float:
    """A bound on || diag(w) A M ||_2 for every A in the edge's rows [c +- r]: ||diag(w) c M|| + ||diag(w) r M||.

    The signed centre, not |A|: the change D_t = S_t(x') - S_t(x) on the moving entries is diagonal
    with |D_jj| <= m_j, so ||A D B|| <= ||A M|| ||M^-1 D|| ||B|| <= ||A M|| beta (max pooling: the
    changing outputs' columns, ||D|| <= sqrt(2 w)); |A| would drop the cancellations between the
    moving entries' columns (docs/CERTIFICATES.md section 3).
    """
    if rows is None:
        return 0.0
    centre, radius = _rows(rows)
    if weights is not None:
        centre, radius = centre * weights[:, None], radius * weights[:, None]
    if edge.weight is None:
        assert edge.outputs is not None
        c, r = centre[:, edge.outputs], radius[:, edge.outputs]
        factor = edge.factor
    else:
        c, r = centre[:, edge.moving] * edge.weight, radius[:, edge.moving] * edge.weight
        factor = 1.0
    if not r.any():
        return spectral_norm_bound(c) * factor  # ||c M|| <= || |c| M ||: the signed form is never worse
    signed = spectral_norm_bound(c) + spectral_norm_bound(r)
    return min(signed, spectral_norm_bound(np.abs(c) + r)) * factor  # with a radius, either may be smaller


@dataclass
class Telescope:
    """One ordering's edges with their beta_t, and the A_t rows: the bound for any row weights.

    ``bound(w)`` bounds ||diag(w) (J(x') - J(x))||_2 (w = 1: the deviation itself): weighting the
    rows commutes with the sum over t, so only the A_t factors change (composition.py weighs the
    rows by the square roots of the classes' probability bounds).
    """

    edges: list[Edge] | None
    recorded: dict[str, Cotangent]

    def bound(self, weights: np.ndarray | None = None) -> float:
        """sum_t || diag(w) A_t M_t || beta_t (inf when some node's change has no such form)."""
        if self.edges is None:
            return math.inf
        total = 0.0
        for edge in self.edges:
            total += _term(edge, self.recorded.get(edge.node), weights) * edge.beta
        return total * (1.0 + 1e-9)  # A_t and B_t(x) are float64 values at x (CENTRE_TRUST)


def telescoped_radius(contexts: list[NodeContext], upstream: dict[str, list[Cotangent | None]],
                      recorded: dict[str, Cotangent], at_x: Cotangent,
                      upstream_at_x: dict[str, list[Cotangent | None]] | None = None,
                      betas: dict[tuple[str, int], float] | None = None) -> Telescope:
    """The bound of the module docstring: ``recorded`` holds the A_t rows, ``upstream`` the B_t.

    With ``upstream_at_x`` (ordering (1) only, slopes at x set by the caller), each beta_t is
    refined recursively. ``betas`` (by node and input index) are certified beta_t given directly
    (symbols.py), in place of the norms of ``upstream``, which then only names the moving edges.
    """
    edges = edges_of(contexts, upstream)
    if edges is None:
        return Telescope(None, recorded)
    nodes = {ctx.node.name: ctx for ctx in contexts}
    done: list[Edge] = []
    for edge in edges:
        directions = upstream[edge.node][edge.index]
        assert directions is not None
        edge.beta = betas[(edge.node, edge.index)] if betas is not None else _norm(directions, edge.moving)
        if upstream_at_x is not None and done and int(edge.moving.sum()) <= ROW_LIMIT:
            edge.beta = min(edge.beta, _recursive(edge, nodes, contexts, upstream_at_x, done))
        done.append(edge)
    return Telescope(edges, recorded)


def _recursive(edge: Edge, nodes: dict[str, NodeContext], contexts: list[NodeContext],
               upstream_at_x: dict[str, list[Cotangent | None]], done: list[Edge]) -> float:
    """||B_t(x)|| + sum over earlier edges of || A^t_s M_s || beta_s (rows of t's moving entries)."""
    from fimaudit.certify.propagate import backward_from

    at_x = upstream_at_x[edge.node][edge.index]
    assert at_x is not None
    base = _norm(at_x, edge.moving)
    ctx = nodes[edge.node]
    name = ctx.node.input[edge.index]
    shape = ctx.box(edge.index).at.shape
    count = int(edge.moving.sum())
    start = np.zeros((count, int(np.prod(shape))))
    start[np.arange(count), np.flatnonzero(edge.moving)] = 1.0
    start = start.reshape((count, *shape))
    recorded: dict[str, Cotangent] = {}
    backward_from(contexts, name, Cotangent(start, np.zeros_like(start)), recorded)
    deviation = sum(_term(earlier, recorded.get(earlier.node)) * earlier.beta for earlier in done)
    return (base + deviation) * (1.0 + 1e-12)
