"""Forward mode at x with one deviation symbol per moving slope: activation ranges that stay tight.

Why: interval forward mode (every direction with a centre and a non-negative radius over the
set) pushes each radius through |W|, so a handful of unstable ReLUs early in a deep network
widens every later range by the product of |W| (measured on the ResNet sample model: the radius
grew to 18x the centre within three layers, and the ranges of 126 of 512 ReLUs reached zero
where the linearisation reached it for 6). Here everything is propagated with each local
Jacobian *at x* (signed, so cancellations survive), and what changes over the set enters once,
where it happens, as a *symbol*.

For every input-dependent tensor T the pass keeps a stack S_T of rows:

- the first d rows: dT/dx at x (the columns of the exact Jacobian, one per input coordinate);
- one row per symbol: a slope that can move over the set (an unstable ReLU, a smooth activation,
  a max-pool window whose arg-max can change) at an earlier node t, entry j: the column
  dT/d(out_t)[j] at x scaled by m_j, the slope's largest move (max pooling: m = 1 at an output
  whose arg-max can change). One node's symbols form a ``Block`` holding g_j = G_u[j], the bound
  below for the node's input u (max pooling: twice the largest G_u among the window's candidates,
  the change being one +1 and one -1 there), and beta, a bound on those input rows together.

Then, with q the dual norm of the ball (2 for l2, 1 for l_inf),

    G_T[i] = ||S_T[:d, i]||_q + sum_blocks min(sum_j |S_T[j, i]| g_j, ||S_T[block, i]||_2 beta) + L_T[i]
           >= sup_{x' in set} ||grad T_i(x')||_q,

by telescoping one row at a time (telescoping.py, ordering (1)): grad T_i(x') - grad T_i(x) =
sum_t sum_j a_ij (s_j(x') - s_j(x)) grad u_j(x'), a_ij = dT_i/d(out_t)[j] at x, and by induction in
topological order ||grad u_j(x')||_q <= G_u[j] (the second form is Cauchy-Schwarz over a block).
L_T carries the symbols beyond ``SYMBOL_LIMIT`` as one non-negative vector through |local Jacobian
at x| (each entry bounds the same sum). The set is convex, so by the mean value theorem T_i(x')
lies in T_i(x) +- eps G_T[i]; and by linearising every node at x with its remainder r_t,
T(x') - T(x) = J_T(x) delta + sum_t A_t(x) r_t(x') exactly, which gives a second range from the
rules' ``remainders`` (``Linearised._bound``). Each box is met with both.

At the logits the symbol rows bound the Jacobian's own deviation, whatever the row weights w and
the combination P (``SymbolDeviation``: per block, rank-one terms or the block together, plus the
Frobenius norm of diag(w) |P| L). The stacks are float64 values at x, trusted like every centre to
CENTRE_TRUST (composition.py); sums of them get a 1e-9 margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fimaudit.certify.composition import spectral_norm_bound
from fimaudit.certify.intervals import Box, Cotangent, outward
from fimaudit.certify.registry import CertifyRule, Moves, NodeContext, moves_of, slopes_at_x
from fimaudit.certify.substitution import RelaxedRows, deviation_above

#: Symbols kept as rows; beyond this many, their weights join the loose vector L.
SYMBOL_LIMIT = 2048
#: Largest stack (rows x tensor entries) forward mode at x may hold for one tensor: 2 GiB of float64.
STACK_LIMIT = 1 << 28
#: Margin on sums of float64 values at x (norms, absolute sums).
_SUM_MARGIN = 1.0 + 1e-9


class Unsupported(Exception):
    """A node whose change over the set has no symbol form, or a stack over ``STACK_LIMIT``."""


@dataclass(frozen=True)
class Block:
    """One node's symbols: rows [start, stop) after the d input rows, scaled by the slope moves m_j.

    ``bounds`` holds g_j (G of the moving input entry); ``range_beta`` and ``spectral_beta`` bound
    the node's input rows on the moving entries taken together (``Linearised._groups``).
    """

    start: int
    stop: int
    bounds: np.ndarray
    range_beta: float
    spectral_beta: float
    #: half the width of the node's remainder against its linearisation at x, over m_j (None: eps g_j
    #: stands in, centred at 0)
    remainders: np.ndarray | None = None
    #: the middle of that remainder's range, over m_j (a known shift: ReLU and max-pool remainders are >= 0)
    offsets: np.ndarray | None = None
    #: the remainders' lines in their input, for back-substitution (substitution.py; None: interval only)
    relaxed: RelaxedRows | None = None


@dataclass
class Linearised:
    """The pass of the module docstring, one node at a time (propagate.forward drives it)."""

    eps: float
    dual: float  # q
    d: int
    stacks: dict[str, np.ndarray]
    limit: int = STACK_LIMIT
    loose: dict[str, np.ndarray] = field(default_factory=dict)
    bounds: dict[str, np.ndarray] = field(default_factory=dict)  # G per live tensor
    moved: dict[str, np.ndarray] = field(default_factory=dict)  # the symbols' part of G
    symbols: int = 0
    blocks: list[Block] = field(default_factory=list)
    #: (node, input index) -> a bound on ||B_t over the set||_2 on the input's moving entries (``_beta``)
    betas: dict[tuple[str, int], float] = field(default_factory=dict)
    #: node -> its inputs' d rows at x on their moving entries (telescoping.py's B_t(x))
    at_x: dict[str, list[Cotangent | None]] = field(default_factory=dict)

    @classmethod
    def start(cls, name: str, centre: np.ndarray, eps: float, norm: float, limit: int = STACK_LIMIT) -> Linearised:
        """The input itself: d unit directions, G = 1 (every coordinate's gradient is a unit vector).

        ``limit``: the most entries one stack may hold (the memory budget's share).
        """
        size = centre.size
        if size * size > limit:
            raise Unsupported(f"{size} input directions")
        eye = np.eye(size).reshape((size, *centre.shape))
        pass_ = cls(eps, 1.0 if math.isinf(norm) else 2.0, size, {name: eye}, limit)
        pass_.bounds[name] = np.ones(centre.shape)
        pass_.moved[name] = np.zeros(centre.shape)
        return pass_

    def step(self, rule: CertifyRule, ctx: NodeContext, box: Box, finished: list[str],
             refine: bool = False) -> Box:
        """Propagate the node's first output; returns its box met with the mean-value range.

        ``finished``: the node's inputs no later node reads (dropped once the output is computed).
        ``refine``: a later node relaxes this tensor (a ReLU): its entries whose range still
        crosses zero are bounded again by back-substitution (``_substituted``).
        """
        node = ctx.node
        ins = self._inputs(ctx)
        out = rule.linear(ctx, ins)
        loose = self._loose(rule, ctx)
        out, loose = self._symbols(rule, ctx, out, loose)
        if out.size > self.limit:
            raise Unsupported(f"{out.shape[0]} rows of {node.output[0]!r}")
        own, moved, shift, value_moved = self._bound(out, loose)
        bound = own + moved
        self.drop(finished)
        name = node.output[0]
        self.stacks[name] = out
        self.bounds[name] = bound
        self.moved[name] = moved
        if loose is not None:
            self.loose[name] = loose
        width = self.eps * bound
        slack = 1e-12 * (np.abs(box.at) + width)  # the value at x is itself a float64 computation
        box = box.intersect(*outward(box.at - width, box.at + width, slack))
        centre, width = box.at + shift, self.eps * own + value_moved
        slack = 1e-12 * (np.abs(box.at) + np.abs(shift) + width)
        box = box.intersect(*outward(centre - width, centre + width, slack))
        return self._substituted(box, out, loose) if refine else box

    def _substituted(self, box: Box, out: np.ndarray, loose: np.ndarray | None) -> Box:
        """The box met with the back-substituted range (substitution.py) on its entries that cross zero."""
        if not any(block.relaxed is not None for block in self.blocks):
            return box
        crossing = np.flatnonzero((box.lo.reshape(-1) < 0.0) & (box.hi.reshape(-1) > 0.0))
        if crossing.size == 0:
            return box
        flat = out.reshape(out.shape[0], -1)
        # Chunks of entries: the columns and their two working copies stay within one stack's share
        # of the memory budget (about 3 x rows entries per column).
        chunk = max(1, self.limit // (4 * out.shape[0]))
        above, below = np.empty(crossing.size), np.empty(crossing.size)
        for start in range(0, crossing.size, chunk):
            columns = flat[:, crossing[start : start + chunk]]
            above[start : start + chunk] = deviation_above(columns, self.d, self.blocks, self.eps, self.dual)
            below[start : start + chunk] = deviation_above(-columns, self.d, self.blocks, self.eps, self.dual)
        if loose is not None:  # symbols past the limit: eps times their gradient bounds, as in _bound
            extra = self.eps * loose.reshape(-1)[crossing]
            above, below = above + extra, below + extra
        at = box.at.reshape(-1)[crossing]
        slack = 1e-12 * (np.abs(at) + above + below)
        low, high = outward(at - below, at + above, slack)
        lo, hi = box.lo.copy().reshape(-1), box.hi.copy().reshape(-1)
        lo[crossing] = np.maximum(lo[crossing], low)
        hi[crossing] = np.minimum(hi[crossing], high)
        return Box(box.at, lo.reshape(box.lo.shape), hi.reshape(box.hi.shape), box.ball)

    # -- the pieces of a step ------------------------------------------------------------------
    def _inputs(self, ctx: NodeContext) -> list[np.ndarray | None]:
        """The varying inputs' stacks, padded with zero rows to the same number of symbols."""
        ins: list[np.ndarray | None] = []
        for name, box in zip(ctx.node.input, ctx.boxes, strict=False):
            if box is None or not name:
                ins.append(None)
                continue
            if name not in self.stacks:
                raise Unsupported(f"no directions for {name!r}")
            ins.append(self.stacks[name])
        rows = max(stack.shape[0] for stack in ins if stack is not None)
        return [stack if stack is None or stack.shape[0] == rows else _pad(stack, rows) for stack in ins]

    def _loose(self, rule: CertifyRule, ctx: NodeContext) -> np.ndarray | None:
        """L through |local Jacobian at x| (the radius path of ``tangent`` with slopes at x)."""
        names = [name if box is not None else "" for name, box in zip(ctx.node.input, ctx.boxes, strict=False)]
        if not any(name in self.loose for name in names if name):
            return None
        rows: list[Cotangent | None] = []
        for name, box in zip(names, ctx.boxes, strict=False):
            if not name or box is None:
                rows.append(None)
                continue
            radius = self.loose.get(name, np.zeros(box.at.shape))[None]
            rows.append(Cotangent(np.zeros_like(radius), radius))
        with slopes_at_x([ctx]):
            return rule.tangent(ctx, rows).radius[0]

    def _symbols(self, rule: CertifyRule, ctx: NodeContext, out: np.ndarray,
                 loose: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """New symbols where the node's local Jacobian can move (one block of rows, or L past the limit)."""
        how = moves_of(rule, ctx)
        if how is not None and how.fixed:
            return out, loose
        groups = self._groups(rule, ctx, how, out.shape[1:])
        remainders = rule.remainders(ctx) if len(groups) == 1 else None
        for moves, bounds, range_beta, spectral_beta in groups:
            weight = moves * bounds
            entries = np.flatnonzero(weight.reshape(-1) > 0)
            if entries.size == 0:
                continue
            if self.symbols + entries.size > SYMBOL_LIMIT:
                loose = weight if loose is None else loose + weight
                continue
            out = _pad(out, self.d + self.symbols)
            injected = np.zeros((entries.size, moves.size))
            injected[np.arange(entries.size), entries] = moves.reshape(-1)[entries]
            out = np.concatenate([out, injected.reshape((entries.size, *out.shape[1:]))])
            stop = self.symbols + entries.size
            half = middle = None
            if remainders is not None:
                low, high = (part.reshape(-1)[entries] for part in remainders)
                scale = moves.reshape(-1)[entries]
                middle = 0.5 * (low + high) / scale
                half = np.nextafter(np.nextafter(0.5 * (high - low), np.inf) / scale, np.inf)
                half = half + 1e-15 * np.abs(middle)  # the rounding of the middle
            relaxed = self._relaxed(rule, ctx, entries, moves.reshape(-1)[entries]) if remainders is not None else None
            self.blocks.append(Block(self.symbols, stop, bounds.reshape(-1)[entries], range_beta, spectral_beta,
                                     half, middle, relaxed))
            self.symbols = stop
        return out, loose

    def _relaxed(self, rule: CertifyRule, ctx: NodeContext, entries: np.ndarray,
                 scale: np.ndarray) -> RelaxedRows | None:
        """The rule's relaxation on the new symbols' entries, in symbol units, with their input's columns.

        Only for a one-input activation (the symbol's remainder is a function of that input alone).
        """
        if len(ctx.varying()) != 1 or ctx.varying()[0] != 0:
            return None
        lines = rule.relaxation(ctx)
        name = ctx.node.input[0]
        if lines is None or name not in self.stacks:
            return None
        z0 = ctx.box(0).at.reshape(-1)[entries]

        def pick(values: np.ndarray) -> np.ndarray:
            return np.broadcast_to(values, ctx.box(0).at.shape).reshape(-1)[entries]

        upper_slope, lower_slope = pick(lines.upper_slope), pick(lines.lower_slope)
        stack = self.stacks[name]
        rows = stack.reshape(stack.shape[0], -1)[:, entries].T.copy()
        return RelaxedRows(upper_slope / scale, (upper_slope * z0 + pick(lines.upper_intercept)) / scale,
                           lower_slope / scale, (lower_slope * z0 + pick(lines.lower_intercept)) / scale, rows)

    def _groups(self, rule: CertifyRule, ctx: NodeContext, moves: Moves | None,
                shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        """(moves m, per-entry bounds g, range beta, spectral beta) for each way the node's Jacobian moves.

        A diagonal change (an activation, one factor of a product): m = the slope's largest move,
        g = G of the input entry, the betas bound the input's rows on the moving entries. Max
        pooling: m = 1 on the outputs whose arg-max can change, g = twice the largest G among the
        window's candidates, the betas sqrt(2 w) times the candidates' (||S(x') - S(x)||_2 <= sqrt(2 w)).
        """
        groups = []
        changing = getattr(rule, "changing_weights", None)
        if moves is None or (moves.selection is not None and changing is None):
            raise Unsupported(f"op {ctx.node.op_type} at {ctx.name!r} has no symbol form")
        if moves.selection is not None and changing is not None:
            name = ctx.node.input[0]
            chosen = moves.selection
            factor = math.sqrt(2.0 * chosen.overlap)
            beta, rows = self._beta(name, chosen.candidates)
            self.betas[(ctx.node.name, 0)] = beta
            self.at_x[ctx.node.name] = [rows]
            bounds = changing(ctx, self.bounds[name]) * _SUM_MARGIN
            groups.append((chosen.outputs.astype(np.float64).reshape(shape), bounds.reshape(shape),
                           factor * self._range_beta(name, chosen.candidates, beta), factor * beta))
            return groups
        kept: list[Cotangent | None] = [None] * len(ctx.node.input)
        for index, spread in moves.diagonal:
            name = ctx.node.input[index]
            if tuple(spread.shape) != tuple(shape) or name not in self.bounds:
                raise Unsupported(f"op {ctx.node.op_type} at {ctx.name!r}: slopes of another shape")
            moving = spread > 0
            beta, kept[index] = self._beta(name, moving)
            self.betas[(ctx.node.name, index)] = beta
            groups.append((spread, self.bounds[name], self._range_beta(name, moving, beta), beta))
        self.at_x[ctx.node.name] = kept
        return groups

    def _range_beta(self, name: str, mask: np.ndarray, spectral: float) -> float:
        """A bound on ||B(x') delta||_2 / eps: ||B||_2 (l2); sqrt(sum G_j^2) (l_inf: |b_j.delta| <= eps ||b_j||_1)."""
        if self.dual == 2.0:
            return spectral
        return _frobenius(self.bounds[name].reshape(-1)[mask.reshape(-1)])

    def _bound(self, out: np.ndarray,
               loose: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """G_T in two parts (||grad T_i(x)||_q, its move), and the range's half-width beyond eps ||grad T_i(x)||_q.

        Each block (one node's symbols) adds to the move the smaller of sum_j |a_ij m_j| g_j and
        ||(a_ij m_j)_j||_2 beta: the same sum bounded by Cauchy-Schwarz, with the node's input rows
        taken together (||B_U(x') delta||_2 <= eps beta), which pays when a block has many symbols.
        The range: T(x') - T(x) = J_T(x) delta + sum_t A_t(x) r_t(x') exactly (every node replaced
        by its linearisation at x plus its remainder r_t, propagated by the Jacobian at x), so
        T_i(x') - T_i(x) - sum_j a_ij c_j lies within +- (eps ||grad T_i(x)||_q + sum_j |a_ij| h_j), r_j in
        [c_j - h_j, c_j + h_j] (the rule's ``remainders``; for a ReLU only its overshoot past the kink,
        which is never negative: c_j = h_j). Returned: own, move, the shift sum_j a_ij c_j, and the
        half-width beyond eps own.
        """
        flat = out.reshape(out.shape[0], -1)
        directions = flat[: self.d]
        if self.dual == 2.0:  # one pass, no squared copy of a (d x size) stack
            own = np.sqrt(np.einsum("ij,ij->j", directions, directions)) * _SUM_MARGIN
        else:
            own = np.abs(directions).sum(axis=0) * _SUM_MARGIN
        moved = np.zeros(flat.shape[1])
        value = np.zeros(flat.shape[1])
        shift = np.zeros(flat.shape[1])
        for block in self.blocks:
            if self.d + block.start >= flat.shape[0]:
                break
            signed = flat[self.d + block.start : self.d + block.stop]
            rows = np.abs(signed)
            count = rows.shape[0]
            if block.offsets is not None:
                shift += signed.T @ block.offsets[:count]
            each = rows.T @ block.bounds[:count]
            together = np.sqrt(np.einsum("ij,ij->j", rows, rows)) * block.range_beta
            moved += np.minimum(each, together)
            value += rows.T @ block.remainders[:count] if block.remainders is not None else self.eps * each
        moved *= _SUM_MARGIN
        value = value * _SUM_MARGIN + 1e-12 * np.abs(shift)  # the shift's own rounding
        if loose is not None:
            moved = moved + loose.reshape(-1)
            value = value + self.eps * loose.reshape(-1)
        shape = out.shape[1:]
        return own.reshape(shape), moved.reshape(shape), shift.reshape(shape), value.reshape(shape)

    def _beta(self, name: str, mask: np.ndarray) -> tuple[float, Cotangent]:
        """beta_t >= ||B_t(x') on the masked entries||_2 over the set, and those rows at x.

        The smaller of the Frobenius norm of G (each row's own bound) and ||B_t(x)||_2 plus the
        Frobenius norm of the rows' moves (||B(x') - B(x)||_2 <= its Frobenius norm).
        """
        rows = _moving(self.stacks[name], self.d, mask)
        flat = mask.reshape(-1)
        whole = _frobenius(self.bounds[name].reshape(-1)[flat])
        split = (spectral_norm_bound(rows.centre) * _SUM_MARGIN
                 + _frobenius(self.moved[name].reshape(-1)[flat]))
        return min(whole, split), rows

    def drop(self, names: list[str]) -> None:
        """Forget tensors no later node reads (memory: a stack is (d + symbols) x size)."""
        for name in names:
            for store in (self.stacks, self.bounds, self.moved, self.loose):
                store.pop(name, None)

    def deviation(self, name: str, combination: np.ndarray) -> SymbolDeviation:
        """The logits' symbol rows, as a bound on ||diag(w) P (J(x') - J(x))||_2."""
        stack = self.stacks[name]
        rows = stack.reshape(stack.shape[0], -1)[self.d :]
        loose = self.loose.get(name)
        return SymbolDeviation(combination, rows, tuple(self.blocks), None if loose is None else loose.reshape(-1))


def _pad(stack: np.ndarray, rows: int) -> np.ndarray:
    """The stack with zero rows appended up to ``rows`` (symbols created after it was computed)."""
    if stack.shape[0] >= rows:
        return stack
    return np.concatenate([stack, np.zeros((rows - stack.shape[0], *stack.shape[1:]))])


def _moving(stack: np.ndarray, d: int, mask: np.ndarray) -> Cotangent:
    """The d rows at x on the masked entries (radius 0: these are values at x)."""
    centre = stack[:d].reshape(d, -1)[:, mask.reshape(-1)]
    return Cotangent(centre, np.zeros_like(centre))


def _frobenius(values: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.square(values)))) * _SUM_MARGIN


@dataclass(frozen=True)
class SymbolDeviation:
    """A bound on ||diag(w) P (J(x') - J(x))||_2 from the logits' symbol rows (module docstring).

    Per block, the smaller of sum_j ||diag(w) P s_j||_2 g_j (one rank-one term per symbol) and
    ||diag(w) P S_block||_2 times the block's spectral beta (telescoping.py's term for that
    node); plus the Frobenius norm of diag(w) |P| L for the symbols carried loose.
    """

    combination: np.ndarray  # P [K', K]
    rows: np.ndarray  # [symbols, K], scaled by the slope moves
    blocks: tuple[Block, ...]
    loose: np.ndarray | None  # [K]

    def bound(self, weights: np.ndarray | None = None) -> float:
        """The bound for row weights ``weights`` (None: all ones)."""
        scale = np.ones(self.combination.shape[0]) if weights is None else np.asarray(weights).reshape(-1)
        mapped = (self.rows @ self.combination.T) * scale[None, :]  # [symbols, K']
        total = 0.0
        for block in self.blocks:
            part = mapped[block.start : block.stop]
            if part.size == 0:
                continue
            each = float(np.linalg.norm(part, axis=1) @ block.bounds[: part.shape[0]])
            together = spectral_norm_bound(part) * block.spectral_beta  # signed: telescoping._term
            total += min(each, together)
        if self.loose is not None:
            total += float(np.linalg.norm(scale * (np.abs(self.combination) @ self.loose)))
        return total * _SUM_MARGIN
