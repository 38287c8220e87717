"""The gradient check: are the graph's derivatives right? Passed, failed or *not decided*.

Two independent comparisons on the first few samples:

**Finite differences, with an error model.** For random unit directions v the graph's J dx is
compared with f(x + h v) - f(x - h v), dx being the displacement the input's dtype actually
represents (so the input's own rounding cancels). A central difference errs by truncation, which
falls with the step (C3 h^2 on smooth models, ~h where a step crosses ReLU or max-pool kinks),
and by rounding of the two outputs, which grows as eps |f| / h: on a flat, well-trained model
(gradients small against the logits) the rounding floor at the default step is larger than the
derivative itself, and a check that only tried the default and smaller steps condemned correct
gradients (6 of 8 real CNN exports ended INCONCLUSIVE). So each direction is differenced at a
geometric range of steps on both sides of the default (1e-1 ... 1e-4 of the input scale), and
for each step the error of the difference quotient is *estimated*:

- rounding: R = ROUNDING_FACTOR * u * (|f(x + h v)| + |f(x - h v)|) / ||dx|| per class, with u
  the float32 unit roundoff and |f| the logits the model returned (their own magnitude);
- truncation: T = |D(h') - D(h)| / (q - 1) from the quotient at the next larger step h' = q h
  (Richardson-style; exact for an error falling like h, conservative for h^2);
- a kink within the step: K = |f(x + h v) + f(x - h v) - 2 f(x)| / ||dx||. When one kink (a ReLU,
  a max-pool tie) lies within [x - h v, x + h v], the central quotient misses the derivative at
  x by exactly K; T does not see it when the kink is *at* x, because the quotient of a piecewise
  linear function is then the same at every step (the average of the two one-sided slopes,
  while the graph follows one of them). Images with exactly constant regions (MNIST-like zero
  backgrounds) put max-pool windows in ties at x: without K the check failed a correct
  MaxPool CNN in 45 of 48 directions.

The direction uses its step with the smallest bound max(T, K) + R. If that bound exceeds the tolerance
(``GRADIENT_CHECK_TOLERANCE`` times |J dx|) finite differences cannot resolve the direction: it is
*not decided*. Otherwise it *disagrees* when |D - J dx| > tolerance + bound, and agrees otherwise.
A sample fails when most of its decided directions disagree (a wrong rule is off in almost every
direction; a rare unlucky kink is not), passes when at least half of its directions are decided
and most of them agree, and is not decided otherwise.

**Evaluated lazily, in batches.** Every step for every direction cost 7 x 2 x 16 model rows and
7 x 16 J v rows per sample (20 of a 54 s ResNet-18 audit). The steps are instead tried outward
from the default step (``GRADIENT_CHECK_START``) in rounds of step pairs (``ROUND_PAIRS``), and a
direction leaves once no further step can change its verdict *as long as the error estimates
hold* (the premise of the whole comparison): with delta the graph's relative error along the
direction, every evaluated step has |error - delta| <= bound. After a round, at the direction's
best step so far (error e, bound b):

- e + b <= tolerance: then delta <= tolerance, and the step with the smallest bound b_min over
  *all* steps has error <= delta + b_min <= tolerance + b_min: it agrees there too;
- b <= tolerance and e > tolerance + 3 b: then delta > tolerance + 2 b, and at b_min <= b the
  error is >= delta - b_min > tolerance + b_min: it disagrees there too.

Any other direction goes on to the next round and, unsettled, sees every step: the verdict of
each direction is the one the full scan gives (``compare_directions(early_stop=False)``; a test
compares them). A smooth model settles most directions with the first two steps (a third of the
model rows); a noisy one (ResNet-18 exports, where bounds sit near the tolerance) keeps most
directions to the end and gains from the batching alone: each round's steps and directions go
to the differencer as one stack (a column of steps) and to ``jvp`` as one stack, and f(x) is
evaluated once per sample (``benchmarks/audit_stages.py`` has the numbers).

**The adjoint identity, with no finite differences.** The reverse (VJP) and forward (JVP) graphs
are derived independently (autodiff/build.py), so <u, J^T w> = <J u, w> for every u, w checks
one against the other in float32 alone. Pairs: random u and w, and u = J^T w (where the two sides
are ||J^T w||^2 and any error is at full scale). Tolerance: ADJOINT_FACTOR * u * sqrt(n) times
|u| |J^T w| + |J u| |w|, the typical float32 accumulation error of dot products of length n =
max(d, ADJOINT_MIN_LENGTH) (the layers' own accumulation lengths are unknown here, hence the
floor). Without a forward graph (J v then comes from the reverse graph) it is *not applicable*.

The outcome: **failed** if either comparison found a real disagreement; **passed** if the
finite-difference comparison passed (and the adjoint identity held or was not applicable);
otherwise **not decided**. Not decided does not make an audit inconclusive (fimaudit/verdict.py):
it says the check could not tell, not that the gradients are wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fimaudit.gradients.base import InputJacobian

PASSED, FAILED, NOT_DECIDED, NOT_APPLICABLE = "passed", "failed", "not_decided", "not_applicable"

#: Relative disagreement, beyond the finite-difference error bound, that counts as a real one.
GRADIENT_CHECK_TOLERANCE = 2e-2
#: Finite-difference steps, relative to max(1, max |x|): 1e-1 ... 1e-4, ratio sqrt(10).
GRADIENT_CHECK_STEPS = tuple(float(10.0 ** (-k / 2.0)) for k in range(2, 9))
#: The step tried first (the finite-difference source's default, eps^(1/3) / 5 in float32);
#: the others follow outward from it.
GRADIENT_CHECK_START = 1e-3
#: Step pairs per round of evaluation (the last round takes the rest): the first pair settles
#: most directions of a smooth model; a round's steps run as one batch.
ROUND_PAIRS = (1, 2)
#: float64 entries of perturbed inputs handed to the differencer (and J dx to jvp) per call.
BATCH_ENTRIES = 1 << 22
#: Random directions per checked sample.
GRADIENT_CHECK_DIRECTIONS = 16
#: float32 unit roundoff.
FLOAT32_ROUNDOFF = float(np.finfo(np.float32).eps) / 2.0
#: Rounding of each output, in units of u |f|: one rounding of the result, with room for the
#: last layer's own accumulation.
ROUNDING_FACTOR = 4.0
#: Adjoint tolerance: ADJOINT_FACTOR * u * sqrt(max(d, ADJOINT_MIN_LENGTH)).
ADJOINT_FACTOR = 64.0
ADJOINT_MIN_LENGTH = 4096
#: Random (u, w) pairs per sample for the adjoint identity (plus one aligned pair).
ADJOINT_PAIRS = 4

#: ``difference(sample, tangents [M, d], relative_step)`` -> f(x + h v) - f(x - h v), the
#: represented displacements, |f(x + h v)| + |f(x - h v)|, and the second differences
#: f(x + h v) + f(x - h v) - 2 f(x), each [M, ...]. The step is one float, or a column [M, 1] of
#: one step per tangent row (the check passes columns: several steps in one batch).
Differencer = Callable[
    [np.ndarray, np.ndarray, "float | np.ndarray"], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
]


@dataclass
class DirectionOutcomes:
    """One sample's finite-difference comparison: per direction, decided and agreeing or not."""

    relative_errors: np.ndarray  # |D - J dx| / |J dx| at each direction's chosen step
    relative_bounds: np.ndarray  # the estimated finite-difference error there, / |J dx|
    steps: np.ndarray  # the chosen relative step per direction
    tolerance: float
    #: (step, direction) pairs differenced: at most directions x steps (fewer when settled early).
    differenced: int = 0

    @property
    def decided(self) -> np.ndarray:
        """Directions whose finite-difference error bound is within the tolerance (they can decide)."""
        return self.relative_bounds <= self.tolerance

    @property
    def disagreeing(self) -> np.ndarray:
        """Decided directions whose error exceeds the tolerance plus their error bound."""
        return self.decided & (self.relative_errors > self.tolerance + self.relative_bounds)

    @property
    def status(self) -> str:
        """Failed when most decided directions disagree; passed when at least half are decided and agree."""
        decided = int(self.decided.sum())
        disagree = int(self.disagreeing.sum())
        if decided and 2 * disagree > decided:
            return FAILED
        if 2 * decided >= self.decided.size and 2 * disagree <= decided:
            return PASSED
        return NOT_DECIDED

    def to_dict(self) -> dict[str, Any]:
        """The sample's comparison as JSON (counts, worst errors, median step)."""
        decided = self.decided
        return {
            "status": self.status,
            "directions_decided": int(decided.sum()),
            "directions_disagreeing": int(self.disagreeing.sum()),
            "median_relative_error": float(np.median(self.relative_errors[decided])) if decided.any() else None,
            "median_error_bound": float(np.median(self.relative_bounds)),
            "median_step": float(np.median(self.steps)),
            "steps_differenced": self.differenced,
        }


@dataclass
class AdjointOutcome:
    """One sample's adjoint identity: the largest discrepancy in units of its tolerance."""

    discrepancies: np.ndarray  # |<u, J^T w> - <J u, w>| / scale, per pair
    tolerance: float

    @property
    def status(self) -> str:
        """Failed when any discrepancy exceeds the tolerance."""
        return FAILED if float(self.discrepancies.max()) > self.tolerance else PASSED

    def to_dict(self) -> dict[str, Any]:
        """The adjoint check of the sample as JSON."""
        return {
            "status": self.status,
            "max_relative_discrepancy": float(self.discrepancies.max()),
            "tolerance": self.tolerance,
        }


@dataclass
class GradientCheck:
    """The graph's derivatives checked by finite differences and by the adjoint identity."""

    samples: list[int]
    directions: int
    tolerance: float
    finite_differences: list[DirectionOutcomes]
    adjoint: list[AdjointOutcome] = field(default_factory=list)
    #: Why the adjoint identity was not applicable ("" when it ran).
    adjoint_not_applicable: str = ""

    @property
    def fd_status(self) -> str:
        """The finite-difference comparison over all checked samples."""
        statuses = [outcome.status for outcome in self.finite_differences]
        if FAILED in statuses:
            return FAILED
        return PASSED if statuses and all(s == PASSED for s in statuses) else NOT_DECIDED

    @property
    def adjoint_status(self) -> str:
        """The adjoint identity over all checked samples (not applicable without a forward-mode graph)."""
        if self.adjoint_not_applicable or not self.adjoint:
            return NOT_APPLICABLE
        return FAILED if any(outcome.status == FAILED for outcome in self.adjoint) else PASSED

    @property
    def status(self) -> str:
        """Failed if either part failed; passed only when finite differences decided and agreed."""
        if FAILED in (self.fd_status, self.adjoint_status):
            return FAILED
        return PASSED if self.fd_status == PASSED else NOT_DECIDED

    @property
    def passed(self) -> bool:
        """Whether the check passed."""
        return self.status == PASSED

    @property
    def relative_errors(self) -> list[float]:
        """Per sample, the median over directions of |D - J dx| / |J dx| at the chosen steps."""
        return [float(np.median(outcome.relative_errors)) for outcome in self.finite_differences]

    def summary(self) -> str:
        """One sentence for logs."""
        fd = f"finite differences {self.fd_status.replace('_', ' ')}"
        adjoint = f"adjoint identity {self.adjoint_status.replace('_', ' ')}"
        return f"gradient check {self.status.replace('_', ' ')} ({fd}; {adjoint})"

    def to_dict(self) -> dict[str, Any]:
        """The gradient check as JSON."""
        return {
            "status": self.status,
            "passed": self.passed,
            "samples": self.samples,
            "directions_per_sample": self.directions,
            "tolerance": self.tolerance,
            "finite_differences": {
                "status": self.fd_status,
                "steps": list(GRADIENT_CHECK_STEPS),
                "per_sample": [outcome.to_dict() for outcome in self.finite_differences],
            },
            "adjoint": {
                "status": self.adjoint_status,
                "reason": self.adjoint_not_applicable or None,
                "per_sample": [outcome.to_dict() for outcome in self.adjoint],
            },
            "relative_errors": self.relative_errors,
        }


def _pair_order(steps: Sequence[float], start: float) -> list[int]:
    """Pairs (j - 1, j) of ``steps`` (largest first) in the order they are tried: outward from ``start``.

    Pair j bounds the quotient at steps[j] (its truncation estimate needs steps[j - 1]); the pair
    whose step is nearest ``start`` in log scale comes first, then its neighbours alternately.
    """
    pairs = range(1, len(steps))
    return sorted(pairs, key=lambda j: (abs(np.log(steps[j] / start)), -j))


@dataclass
class _StepValues:
    """What one step's differences say about each direction (rows not evaluated yet: NaN)."""

    quotients: np.ndarray  # D / ||dx|| [M, K]
    graph: np.ndarray  # J dx / ||dx|| [M, K]
    rounding: np.ndarray  # R [M]
    kinks: np.ndarray  # K [M]
    done: np.ndarray  # [M] bool

    @classmethod
    def empty(cls, count: int, classes: int) -> _StepValues:
        """Nothing evaluated yet."""
        return cls(np.full((count, classes), np.nan), np.full((count, classes), np.nan),
                   np.full(count, np.nan), np.full(count, np.nan), np.zeros(count, dtype=bool))


def _evaluate_steps(
    checked: InputJacobian,
    difference: Differencer,
    sample: np.ndarray,
    tangents: np.ndarray,
    wanted: list[tuple[float, np.ndarray, _StepValues]],
) -> None:
    """Difference the rows ``rows`` of each (step, rows, values) and fill ``values``.

    Why batched: every (step, direction) pair of a round goes to the differencer as one stack of
    tangents with a column of steps, and to ``jvp`` as one stack of displacements, so ONNX Runtime
    sees a few large batches instead of one small one per step (ResNet-18 at 3x32x32: 3.3 ms a
    row at 224 rows against 5.6 at 32; its JVP 4.7 ms a row at 112 against 9.9 at 16). Stacks
    are cut at ``BATCH_ENTRIES`` float64 entries so a large input does not hold them all at once.
    """
    stacked = np.concatenate([tangents[rows] for _, rows, _ in wanted])
    column = np.concatenate([np.full(rows.size, step) for step, rows, _ in wanted])[:, None]
    per_call = max(1, BATCH_ENTRIES // max(1, tangents.shape[1]))
    parts = []
    for first in range(0, stacked.shape[0], per_call):
        piece = slice(first, first + per_call)
        differences, moved, magnitudes, second = difference(sample, stacked[piece], column[piece])
        graph = np.asarray(checked.jvp(sample, moved), dtype=np.float64)
        lengths = np.linalg.norm(moved, axis=1)
        lengths[lengths == 0] = np.inf
        parts.append((differences / lengths[:, None], graph / lengths[:, None],
                      ROUNDING_FACTOR * FLOAT32_ROUNDOFF * np.linalg.norm(magnitudes, axis=1) / lengths,
                      np.linalg.norm(second, axis=1) / lengths))
    quotients, graphs, rounding, kinks = (np.concatenate(values) for values in zip(*parts, strict=True))
    first = 0
    for _, rows, values in wanted:
        taken = slice(first, first + rows.size)
        values.quotients[rows], values.graph[rows] = quotients[taken], graphs[taken]
        values.rounding[rows], values.kinks[rows] = rounding[taken], kinks[taken]
        values.done[rows] = True
        first += rows.size


def compare_directions(
    checked: InputJacobian,
    difference: Differencer,
    sample: np.ndarray,
    tangents: np.ndarray,
    steps: Sequence[float] = GRADIENT_CHECK_STEPS,
    tolerance: float = GRADIENT_CHECK_TOLERANCE,
    start: float = GRADIENT_CHECK_START,
    early_stop: bool = True,
    on_round: Callable[[], None] | None = None,
) -> DirectionOutcomes:
    """The finite-difference comparison of one sample (module doc), steps tried outward from ``start``.

    The step pairs are taken in rounds (``ROUND_PAIRS``); with ``early_stop`` a direction is
    settled after a round as soon as the pairs still to come cannot change its verdict (module
    doc, "Evaluated lazily"); without it every step is evaluated for every direction.
    ``on_round`` is called once per round (``round_count`` in all), skipped rounds included.
    """
    steps = sorted(steps, reverse=True)
    count = tangents.shape[0]
    values = [_StepValues.empty(count, checked.num_classes) for _ in steps]
    best_error = np.full(count, np.inf)
    best_bound = np.full(count, np.inf)
    best_step = np.full(count, steps[0])
    open_rows = np.ones(count, dtype=bool)
    rounds = _rounds(steps, start)
    for number, pairs in enumerate(rounds):
        rows = np.flatnonzero(open_rows)
        if rows.size == 0 or not pairs:
            if on_round is not None:
                for _ in rounds[number:]:  # the rounds no direction needs count as done
                    on_round()
            break
        needed = sorted({i for j in pairs for i in (j - 1, j)})
        wanted = [(steps[i], rows[~values[i].done[rows]], values[i]) for i in needed]
        wanted = [entry for entry in wanted if entry[1].size]
        if wanted:
            _evaluate_steps(checked, difference, sample, tangents, wanted)
        for j in pairs:
            larger, smaller = values[j - 1], values[j]
            ratio = steps[j - 1] / steps[j]
            truncation = np.linalg.norm(larger.quotients[rows] - smaller.quotients[rows], axis=1) / (ratio - 1.0)
            scale = np.linalg.norm(smaller.graph[rows], axis=1)
            scale[scale == 0] = np.finfo(np.float64).tiny
            # Where the graph's derivative is exactly 0 (tree ensembles, dead ReLUs) any nonzero bound or
            # error is infinitely large relative to it: inf is the intended value, not an accident.
            with np.errstate(over="ignore"):
                bound = (np.maximum(truncation, smaller.kinks[rows]) + smaller.rounding[rows]) / scale
                error = np.linalg.norm(smaller.quotients[rows] - smaller.graph[rows], axis=1) / scale
            better = bound < best_bound[rows]
            improved = rows[better]
            best_bound[improved], best_error[improved], best_step[improved] = bound[better], error[better], steps[j]
        if early_stop:
            open_rows[rows[_settled(best_error[rows], best_bound[rows], tolerance)]] = False
        if on_round is not None:
            on_round()
    differenced = sum(int(value.done.sum()) for value in values)
    return DirectionOutcomes(best_error, best_bound, best_step, tolerance, differenced)


def _rounds(steps: Sequence[float], start: float) -> list[list[int]]:
    """The step pairs of each round, in the order tried (``ROUND_PAIRS`` pairs, then the rest)."""
    order = _pair_order(steps, start)
    cuts = [int(cut) for cut in np.cumsum([0, *ROUND_PAIRS])]
    return [order[a:b] for a, b in zip(cuts, [*cuts[1:], len(order)], strict=True)]


def round_count(steps: Sequence[float] = GRADIENT_CHECK_STEPS, start: float = GRADIENT_CHECK_START) -> int:
    """Rounds one sample's comparison takes at most: the unit of the check's progress."""
    return len(_rounds(sorted(steps, reverse=True), start))


def _settled(error: np.ndarray, bound: np.ndarray, tolerance: float) -> np.ndarray:
    """Directions whose verdict no further step can change while the error estimates hold (module doc).

    Agreeing: error + bound <= tolerance. Disagreeing: bound <= tolerance and error > tolerance
    + 3 bound.
    """
    with np.errstate(invalid="ignore"):
        agree = error + bound <= tolerance
        disagree = (bound <= tolerance) & (error > tolerance + 3.0 * bound)
    return agree | disagree


def adjoint_identity(
    checked: InputJacobian, sample: np.ndarray, rng: np.random.Generator, pairs: int = ADJOINT_PAIRS
) -> AdjointOutcome:
    """<u, J^T w> against <J u, w> for random pairs and the aligned pair u = J^T w (module doc)."""
    k, d = checked.num_classes, checked.input_size
    cotangents = rng.standard_normal((pairs, k))
    reverse = np.asarray(checked.vjp(sample, cotangents), dtype=np.float64)  # J^T w, [P, d]
    inputs = np.concatenate([rng.standard_normal((pairs, d)), reverse])  # random u, then u = J^T w
    weights = np.concatenate([cotangents, cotangents])
    reverse_all = np.concatenate([reverse, reverse])
    forward = np.asarray(checked.jvp(sample, inputs), dtype=np.float64)  # J u, [2P, K]
    left = np.einsum("pd,pd->p", inputs, reverse_all)
    right = np.einsum("pk,pk->p", forward, weights)
    scale = (np.linalg.norm(inputs, axis=1) * np.linalg.norm(reverse_all, axis=1)
             + np.linalg.norm(forward, axis=1) * np.linalg.norm(weights, axis=1))
    scale[scale == 0] = np.finfo(np.float64).tiny
    tolerance = ADJOINT_FACTOR * FLOAT32_ROUNDOFF * float(np.sqrt(max(d, ADJOINT_MIN_LENGTH)))
    return AdjointOutcome(np.abs(left - right) / scale, tolerance)


def gradient_check(
    checked: InputJacobian,
    difference: Differencer,
    inputs: np.ndarray,
    rng: np.random.Generator,
    count: int = 3,
    directions: int = GRADIENT_CHECK_DIRECTIONS,
    tolerance: float = GRADIENT_CHECK_TOLERANCE,
    steps: Sequence[float] = GRADIENT_CHECK_STEPS,
    progress: Callable[[int, int], None] | None = None,
) -> GradientCheck:
    """Check ``checked`` on the first ``count`` samples (module doc), drawing from ``rng``.

    ``difference(sample, tangents, relative_step)`` evaluates the model on both sides of each
    tangent (``FiniteDifferenceJacobian.central_differences``); how either was built is the
    caller's business (``fimaudit.gradients.make_source``). ``progress(done, total)`` counts
    rounds of differences (``round_count`` a sample): on an ImageNet-size CNN a round is tens of
    seconds.
    """
    chosen = inputs[:count]
    unavailable = checked.forward_mode_unavailable() or ""
    fd, adjoint = [], []
    total = chosen.shape[0] * round_count(steps)
    done = [0]

    def advance() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    for sample in chosen:
        tangents = rng.standard_normal((directions, sample.size))
        tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
        fd.append(compare_directions(checked, difference, sample, tangents, steps, tolerance, on_round=advance))
        if not unavailable:
            adjoint.append(adjoint_identity(checked, sample, rng))
    if not unavailable:
        # A source may learn late that its forward mode is unavailable (a JVP session made on its
        # first run and refused, GraphJacobian._combined_jvp); J v then came from the reverse
        # graph, and the identity compared that graph with itself.
        unavailable = checked.forward_mode_unavailable() or ""
        if unavailable:
            adjoint = []
    reason = f"no forward-mode (JVP) graph: {unavailable}" if unavailable else ""
    return GradientCheck(list(range(chosen.shape[0])), directions, tolerance, fd, adjoint, reason)
