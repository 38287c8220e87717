"""Back-substitution of the remainders' relaxations: ranges that keep how the remainders move together.

Why: symbols.py's range of a tensor T is T_i(x) + shift +- (eps ||grad T_i(x)||_q + sum_j |a_ij| h_j),
each remainder r_j taken at its own worst case independently. On ResNet-18 at 1e-4 ||x|| that sum
grew to 14x the first-order width by the third stage: the ranges of 10-30 ReLUs per layer that the
first-order width says can switch became 250-700 that the ranges said could, and the symbols
they created widened every later range in turn (the cascade of docs/CERTIFICATES.md section 8).
Yet a ReLU's remainder is not free: it is a known function of its input,
r_j = relu(z_j) - s0_j z_j, and z_j itself is T's kind of sum, z_j(x') - z_j(x) = g_j . delta +
sum_k b_jk r_k over earlier remainders (its own stack column at x). Bounding r_j between two
lines in z_j (the chord above, a line through the kink below: ``Relaxation``) and substituting
z_j's column, block by block from the last symbol back to the first, turns
T_i(x') - T_i(x) = grad T_i(x) . delta + sum_j a_ij r_j into

    T_i(x') - T_i(x) <= v_i . delta + c_i <= eps ||v_i||_q + c_i,

with v_i = grad T_i(x) + sum_j (a_ij p_j) g_j + ... (p_j the slope of the line chosen by the
sign of the coefficient reaching r_j: the upper line for a positive one, the lower line for a
negative one) and c_i the lines' intercepts. Remainders without a relaxation (smooth activations,
max pooling, products) keep their interval [c_j - h_j, c_j + h_j]. This is CROWN's backward bound
(Zhang et al. 2018), run over the symbols rather than over every neuron: the linear part of the
network is already folded into the stack columns at x, so only the few thousand nonlinear
entries are substituted, at O(targets x symbols x (d + symbols)) per tensor.

Validity: every step replaces a_ij r_j by a line that bounds it from the right side over the whole
set (the input box of r_j holds there), and the rest is exact algebra at x. Rounding: the values at
x are trusted to CENTRE_TRUST as everywhere (composition.py); the sums get a relative margin of
1e-9 of their absolute terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fimaudit.certify.symbols import Block

#: Relative margin on the substituted sums (their rounding; the values at x are trusted).
_MARGIN = 1e-9


@dataclass(frozen=True)
class RelaxedRows:
    """One block's relaxations in symbol units (the remainder over the slope move m_j), with the input's columns.

    ``upper_slope[j] * dz + upper_offset[j] >= r_j / m_j >= lower_slope[j] * dz + lower_offset[j]``
    for dz = z_j(x') - z_j(x); ``rows[j]`` is z_j's stack column at x: d input directions, then its
    coefficients on the symbols created before this block.
    """

    upper_slope: np.ndarray
    upper_offset: np.ndarray
    lower_slope: np.ndarray
    lower_offset: np.ndarray
    rows: np.ndarray  # [entries, d + earlier symbols]


def deviation_above(columns: np.ndarray, d: int, blocks: Sequence[Block], eps: float,
                    dual: float) -> np.ndarray:
    """An upper bound on T_i(x') - T_i(x) over the set, for each stack column i ([d + symbols, n]).

    (The lower bound is minus this for the negated columns.) ``dual``: the ball's dual norm q.
    """
    directions = np.array(columns[:d].T, dtype=np.float64)  # v_i, [n, d]
    symbols = columns.shape[0] - d
    coefficients = np.array(columns[d:].T, dtype=np.float64)  # on each symbol, [n, symbols]
    constant = np.zeros(columns.shape[1])
    magnitude = np.zeros(columns.shape[1])
    for block in reversed(blocks):
        if block.start >= symbols:
            continue
        stop = min(block.stop, symbols)
        count = stop - block.start
        part = coefficients[:, block.start : stop]
        if not part.any():
            continue
        relaxed = block.relaxed
        if relaxed is None:  # the remainder's interval
            offsets = np.zeros(count) if block.offsets is None else block.offsets[:count]
            half = eps * block.bounds[:count] if block.remainders is None else block.remainders[:count]
            constant += part @ offsets + np.abs(part) @ half
            magnitude += np.abs(part) @ (np.abs(offsets) + half)
            continue
        positive = part > 0
        slopes = np.where(positive, relaxed.upper_slope[:count], relaxed.lower_slope[:count])
        offsets = np.where(positive, relaxed.upper_offset[:count], relaxed.lower_offset[:count])
        terms = part * offsets
        constant += terms.sum(axis=1)
        magnitude += np.abs(terms).sum(axis=1)
        weights = part * slopes  # on dz_j, whose column is substituted
        rows = relaxed.rows[:count]
        directions += weights @ rows[:, :d]
        earlier = rows.shape[1] - d
        if earlier:
            coefficients[:, :earlier] += weights @ rows[:, d:]
    norms = np.sqrt(np.einsum("ij,ij->i", directions, directions)) if dual == 2.0 else np.abs(directions).sum(axis=1)
    width = eps * norms
    return constant + width + _MARGIN * (magnitude + width)
