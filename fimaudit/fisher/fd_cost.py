"""What an audit by finite differences will cost, before it starts (issue 16 item 4).

A dense finite-difference Jacobian costs 2 d model evaluations per sample: 301,056 for one
3 x 224 x 224 image, hours for a few samples of an ImageNet CNN on a CPU. So before the first
sample, the audit times one batched forward run (``measure_seconds_per_evaluation``), multiplies
by the evaluations the chosen method needs for all samples (``evaluations_per_sample``), logs the
estimate, and refuses a run whose estimate exceeds ``--max-time``.

Which route ``--method auto`` takes with finite differences (``fd_route``): the dense Jacobian
(exact lambda_max) while it costs at most ``DENSE_FD_FACTOR`` times the black-box sketch (d <= 3200
at the default 400 evaluations: MNIST and CIFAR sizes stay exact), the black-box sketch beyond
(central-difference JVP sketches of J J^T, with an interval; fisher/blackbox.py).
Lanczos on finite differences is no alternative: its vjp needs the dense Jacobian.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from fimaudit.errors import ResourceError

logger = logging.getLogger(__name__)

#: auto keeps the dense (exact) finite-difference route while 2 d <= this x the black-box budget.
DENSE_FD_FACTOR = 16
#: Rows of the timed forward run (a fixed count: the audit's evaluation total does not depend on
#: the memory plan's batch).
TIMING_ROWS = 32
#: Default operator products of the iterative methods (their modules' defaults), for the estimate.
_PRODUCTS = {"lanczos": 100, "power": 200, "hutchinson": 60}


def blackbox_evaluations(budget: int | None) -> int:
    """Model evaluations per sample of the black-box estimator for ``budget`` (None: its default)."""
    from fimaudit.fisher.blackbox import DEFAULT_EVALUATIONS

    return int(budget) if budget else DEFAULT_EVALUATIONS


def fd_route(input_size: int, budget: int | None) -> tuple[str, str]:
    """("exact" or "blackbox", why) for ``--method auto`` with finite differences."""
    dense = 2 * int(input_size)
    sketch = blackbox_evaluations(budget)
    if dense <= DENSE_FD_FACTOR * sketch:
        return "exact", (
            f"finite differences: the dense Jacobian ({dense} evaluations per sample) is at most "
            f"{DENSE_FD_FACTOR} x the black-box sketch ({sketch})"
        )
    return "blackbox", (
        f"finite differences on d = {input_size} inputs: a dense Jacobian would take {dense} evaluations "
        f"per sample; the black-box sketch takes {sketch} (an estimate with a 95% interval)"
    )


def evaluations_per_sample(method: str, input_size: int, budget: int | None) -> int:
    """Model evaluations one sample costs with finite-difference gradients under ``method``."""
    dense = 2 * int(input_size)
    if method == "auto":
        method = fd_route(input_size, budget)[0]
    if method == "blackbox":
        return blackbox_evaluations(budget)
    if method == "exact":
        return dense
    # Iterative methods: the first vjp builds the dense Jacobian, each jvp costs two evaluations.
    return dense + 2 * int(budget or _PRODUCTS.get(method, 100))


@dataclass
class FdCost:
    """The planned cost of a finite-difference audit: what the warning and the report say."""

    method: str  # the route that will run ("exact", "blackbox", ...), auto resolved
    requested: str
    evaluations_per_sample: int
    samples: int
    seconds_per_evaluation: float  # measured on a batched forward run

    @property
    def evaluations(self) -> int:
        """Model evaluations of the whole audit."""
        return self.evaluations_per_sample * self.samples

    @property
    def expected_seconds(self) -> float:
        """The audit's expected duration from the measured time per evaluation."""
        return self.evaluations * self.seconds_per_evaluation

    def describe(self) -> str:
        """The cost in one sentence, for the log and the report's note."""
        return (
            f"finite differences for --method {self.requested}"
            + (f" ({self.method})" if self.method != self.requested else "")
            + f": {self.evaluations_per_sample} model evaluations per sample, {self.evaluations} for "
            f"{self.samples} samples; expected {format_duration(self.expected_seconds)} at "
            f"{self.seconds_per_evaluation * 1e3:.3g} ms per evaluation (measured)"
        )

    def to_dict(self) -> dict[str, float | int | str]:
        """The cost as JSON, with the derived totals."""
        record = asdict(self)
        record.update(evaluations=self.evaluations, expected_seconds=self.expected_seconds)
        return record

    def check(self, max_time: float | None) -> None:
        """A ResourceError, before anything is computed, when the estimate exceeds ``max_time``."""
        if max_time is None or self.expected_seconds <= max_time:
            return
        hint = (
            "--method blackbox (--budget evaluations per sample), "
            if self.method != "blackbox"
            else "a smaller --budget, "
        )
        raise ResourceError(
            f"{self.describe()}, beyond --max-time {max_time:g} s; use {hint}fewer --samples, "
            "or a larger --max-time"
        )


def measure_seconds_per_evaluation(run_rows, sample: np.ndarray, rows: int = TIMING_ROWS) -> float:
    """Seconds per model evaluation from one batched forward run of ``rows`` copies of ``sample``.

    ``run_rows`` evaluates an array of rows (the gradient source's ``logits``); the copies are
    perturbed by one unit in the last place so that no runtime can serve them from a cache.
    """
    batch = np.repeat(np.asarray(sample)[None], rows, axis=0)
    if np.issubdtype(batch.dtype, np.floating) and batch.size:
        batch = np.nextafter(batch, np.inf)
    started = time.perf_counter()
    run_rows(batch)
    return max(time.perf_counter() - started, 1e-9) / rows


def format_duration(seconds: float) -> str:
    """3.2 s, 4.5 min, 2.1 h, 3.0 days."""
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


#: Estimates at or above this are logged as warnings (below: info); per-sample progress lines too.
SLOW_RUN_SECONDS = 10.0


def plan_finite_differences(
    run_rows, sample: np.ndarray, method: str, budget: int | None, samples: int, max_time: float | None
) -> tuple[FdCost, str]:
    """Time one batched forward run, estimate the audit's cost, log it, refuse it past ``max_time``.

    Returns the cost and a clause for the audit's gradients note ("" unless auto changed route).
    """
    size = int(np.asarray(sample).size)
    per_sample = evaluations_per_sample(method, size, budget)
    route, reason = fd_route(size, budget) if method == "auto" else (method, "")
    seconds = measure_seconds_per_evaluation(run_rows, sample, max(1, min(TIMING_ROWS, per_sample)))
    cost = FdCost(route, method, per_sample, int(samples), seconds)
    cost.check(max_time)
    switched = method == "auto" and route == "blackbox"
    dense_beyond = method in ("exact", "lanczos", "power", "hutchinson") and fd_route(size, budget)[0] == "blackbox"
    message = cost.describe()
    if switched:
        message += f"; --method auto uses the black-box sketch: {reason}"
    elif dense_beyond:
        message += f" (--method blackbox would take {blackbox_evaluations(budget)} per sample)"
    if switched or dense_beyond or cost.expected_seconds >= SLOW_RUN_SECONDS:
        logger.warning("%s", message)
    else:
        logger.info("%s", message)
    return cost, (f"; --method auto: black-box sketch ({reason})" if switched else "")


class ProgressLog:
    """Per-sample progress of a finite-difference audit: rate and time left.

    On stderr when the run is long (warning level; info otherwise), where a progress bar is not
    shown (CI logs).
    """

    def __init__(self, cost: FdCost) -> None:
        self.cost = cost
        self.started = time.perf_counter()
        self.level = logging.WARNING if cost.expected_seconds >= 6 * SLOW_RUN_SECONDS else logging.INFO

    def sample_done(self, done: int, total: int, evaluations: int) -> None:
        """Log the rate and the time left after ``done`` of ``total`` samples."""
        elapsed = time.perf_counter() - self.started
        rate = evaluations / elapsed if elapsed > 0 else float("inf")
        left = elapsed / done * (total - done) if done else float("nan")
        logger.log(
            self.level, "sample %d/%d done: %.0f model evaluations/s, %s elapsed, about %s left",
            done, total, rate, format_duration(elapsed), format_duration(left),
        )
