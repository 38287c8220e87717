"""The gate's verdict: pass, fail or inconclusive, with the reason in one sentence.

An audit compares a statistic of lambda_max (max, p95, mean or median over the samples) with the
``--fail-above`` threshold T. Not every value is exact: an estimate comes with a confidence
interval, a lower bound only says "at least", an upper bound only "at most". Every statistic used
here is monotone in each sample's value, so applying it to the samples' lowest possible values and
to their highest possible values brackets the true statistic. Then:

- **pass**: the top of the bracket is at or below T;
- **fail**: the bottom of the bracket is above T;
- **inconclusive**: the bracket straddles T (for example an interval [8, 12] against T = 10, or a
  lower bound of 3 against T = 10: it can show a failure, never a pass), or a sanity check that
  undermines every value failed (the gradient check, or bound >= measured).

A gradient check that is *not decided* (fimaudit/sanity.py: float32 finite differences too noisy
at every step to tell, and no real disagreement anywhere) does not make an audit inconclusive:
it is absence of evidence, not evidence of a wrong gradient, and treating it as a failure blocked
every CI gate on flat, well-trained models. The reason says that the check did not decide.

An estimate that did not converge (``diagnostics.converged`` false) keeps the bottom of its
interval (a Rayleigh quotient is never above lambda_max) but loses its top: it counts as a lower
bound, so it can still show a failure but no longer a pass.

Inconclusive does not pass the gate: ``passed`` is true only for a pass (and when no threshold is
set), so a CI job exits 1 for a fail or an inconclusive audit, and the reason says which.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fimaudit.report.checks import FAILED, NOT_DECIDED
from fimaudit.report.formatting import fmt

PASS, FAIL, INCONCLUSIVE, NO_THRESHOLD = "pass", "fail", "inconclusive", "no_threshold"
VERDICT_STATUSES = (PASS, FAIL, INCONCLUSIVE, NO_THRESHOLD)

# Stands in for "no upper limit" while computing percentiles (inf would make interpolation NaN).
_UNBOUNDED = 1e300
_UNBOUNDED_CUTOFF = 1e290


def sample_range(sample: dict[str, Any]) -> tuple[float, float]:
    """Lowest and highest value the sample's true lambda_max can have (inf: no upper limit)."""
    value = float(sample["lambda_max"])
    kind = sample["kind"]
    diagnostics = sample.get("diagnostics") or {}
    if kind == "estimate" and diagnostics.get("converged") is False:
        low = sample["interval"][0] if sample.get("interval") else value
        return float(low), float("inf")
    if kind == "estimate" and sample.get("interval"):
        low, high = sample["interval"]
        return float(low), float(high)
    if kind == "lower_bound":
        return value, float("inf")
    if kind == "upper_bound":
        return 0.0, value
    return value, value


def statistic_of(values: np.ndarray, statistic: str) -> float:
    """The statistic exactly as the audit's summary computes it (numpy's default percentile)."""
    if statistic == "max":
        return float(values.max())
    if statistic == "mean":
        return float(values.mean())
    if statistic == "median":
        return float(np.median(values))
    if statistic == "p95":
        return float(np.percentile(values, 95))
    raise ValueError(f"unknown statistic {statistic!r}")


def statistic_bracket(samples: list[dict[str, Any]], statistic: str) -> tuple[float, float | None]:
    """(lowest, highest) possible value of the statistic; highest is None when unbounded."""
    ranges = np.array([sample_range(s) for s in samples], dtype=np.float64)
    lows = ranges[:, 0]
    highs = np.where(np.isinf(ranges[:, 1]), _UNBOUNDED, ranges[:, 1])
    high = statistic_of(highs, statistic)
    return statistic_of(lows, statistic), (None if high >= _UNBOUNDED_CUTOFF else high)


# Checks whose failure makes every value suspect; a convergence failure is handled per sample.
UNDERMINING_CHECKS = ("gradient_check", "bound_check")


def _failed_checks(checks: list[dict[str, str]], names: tuple[str, ...] | None = None) -> list[str]:
    return [check["title"].split(" (")[0].lower() for check in checks
            if check["status"] == FAILED and (names is None or check["name"] in names)]


def _undecided_note(checks: list[dict[str, str]]) -> str:
    """A clause naming checks that could not decide (they do not change the status)."""
    undecided = [check["title"].split(" (")[0].lower() for check in checks if check["status"] == NOT_DECIDED]
    if not undecided:
        return ""
    return f" (the {' and the '.join(undecided)} did not decide, which does not undermine the values)"


def assess(document: dict[str, Any], checks: list[dict[str, str]]) -> dict[str, Any]:
    """The verdict entry of the JSON document (keeps the foundation's fields, adds ``status``)."""
    recorded = document["verdict"]
    threshold, statistic = recorded["threshold"], recorded["statistic"]
    samples = document["samples"]
    value = float(recorded["value"])
    all_exact = all(s["kind"] == "exact" for s in samples)
    low, high = (value, value) if all_exact else statistic_bracket(samples, statistic)
    failed = _failed_checks(checks, UNDERMINING_CHECKS)
    bracket = None if all_exact else [low, high]
    verdict = {
        "threshold": threshold,
        "statistic": statistic,
        "value": value,
        "interval": bracket,
    }
    name = f"{statistic} lambda_max"
    if threshold is None:
        reason = "no threshold set (--fail-above); nothing to gate"
        if _failed_checks(checks):
            reason += f", but the {' and the '.join(_failed_checks(checks))} failed"
        return {**verdict, "status": NO_THRESHOLD, "passed": True, "reason": reason + _undecided_note(checks)}
    limit = fmt(threshold)
    above = sum(1 for s in samples if float(s["lambda_max"]) > threshold)
    if failed:
        status = INCONCLUSIVE
        reason = (f"the {' and the '.join(failed)} failed, so the measured {name} ({fmt(value)}) "
                  f"cannot be trusted against the threshold {limit}")
    elif high is not None and high <= threshold:
        status = PASS
        reason = (f"{name} {fmt(value)} is at or below the threshold {limit}" if all_exact
                  else f"{name} is at most {fmt(high)} (the top of its range given the intervals and bounds), at or below the threshold {limit}")
    elif low > threshold:
        status = FAIL
        reason = (f"{name} {fmt(value)} is above the threshold {limit}" if all_exact
                  else f"{name} is at least {fmt(low)} (the bottom of its range given the intervals and bounds), above the threshold {limit}")
        reason += f" ({above} of {len(samples)} samples above it)"
    else:
        status = INCONCLUSIVE
        if high is None:
            unconverged = sum(1 for s in samples if s["kind"] == "estimate" and (s.get("diagnostics") or {}).get("converged") is False)
            why = f"{unconverged} estimates did not converge" if unconverged else "lower bounds only"
            reason = (f"{name} is at least {fmt(low)} but has no upper limit ({why}), "
                      f"so it cannot be shown to be at or below the threshold {limit}")
        else:
            reason = f"{name} lies between {fmt(low)} and {fmt(high)}, which straddles the threshold {limit}"
    return {**verdict, "status": status, "passed": status == PASS, "reason": reason + _undecided_note(checks)}
