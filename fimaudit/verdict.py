"""The one place that decides an audit: its sanity checks, and pass, fail or inconclusive.

Everything here reads typed results (fimaudit/results.py, fimaudit/sanity.py), never the JSON
document; the report only serialises and renders what :func:`judge` returns, and the CLI exits
on ``Verdict.passed``.

**Sanity checks.** Three questions a reviewer asks before trusting the numbers:

- gradient check: do the graph's gradients agree with finite differences and with the adjoint
  identity on a few samples (fimaudit/sanity.py)?
- estimator convergence: did every iterative estimate converge (``diagnostics.converged``)?
- bound >= measured: is every measured lambda_max at or below the analytic bounds?

Each has a status: ``passed``, ``failed``, ``not_decided`` (it ran but could not tell, e.g. finite
differences drowned in float32 rounding on a flat model), ``not_computed`` (it could run, but did
not) or ``not_applicable`` (nothing to check). A check that did not run is reported as such,
never dropped, so a report cannot look cleaner than the audit was.

**The verdict.** The chosen statistic of lambda_max (fimaudit/statistics.py) is compared with the
threshold T. Not every value is exact: an estimate comes with a confidence interval, a lower
bound only says "at least", an upper bound only "at most". Every statistic is monotone in each
sample's value, so it is bracketed by applying it to the samples' lowest and highest possible
values. Then **pass** when the top of the bracket is at or below T; **fail** when its bottom is
above T; **inconclusive** when the bracket straddles T, or when a check that undermines every
value (the gradient check, bound >= measured) failed. A gradient check that did not decide does
not make an audit inconclusive: it is absence of evidence, not evidence of a wrong gradient.
An estimate that did not converge keeps the bottom of its interval (a Rayleigh quotient is never
above lambda_max) but loses its top: it can still show a failure, no longer a pass.

**The robust-accuracy gate** (``--attack`` with ``--fail-robust-below R``): when the forward-verified
adversarial examples bring robust accuracy below R at any ``--attack-eps`` radius, the audit fails
whatever lambda_max says; when the gate was asked for but the attacks could not run, a passing
audit becomes inconclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fimaudit.errors import InputError
from fimaudit.report.formatting import fmt
from fimaudit.results import AttackSummary, Bound, Check, CheckStatus, SampleResult, Verdict, VerdictStatus
from fimaudit.sanity import GradientCheck
from fimaudit.statistics import STATISTICS, Summary, bracket

# A measured value may exceed a tight bound by the gradients' own error (finite differences in
# float32 are good to about 1e-4 relative); beyond this it is a contradiction.
BOUND_RELATIVE_SLACK = 1e-3

#: Checks, in the order reports show them: name -> (title, how a sentence names it).
CHECKS = {
    "gradient_check": ("Gradient check (graph gradients vs finite differences)", "gradient check"),
    "convergence": ("Estimator convergence", "estimator convergence"),
    "bound_check": ("Analytic bound >= measured", "analytic bound >= measured"),
    "robust_accuracy": ("Robust accuracy under attack (--fail-robust-below)", "robust-accuracy gate"),
    "certified": ("Certified local bound <= threshold (--certify)", "certificate"),
}
# Checks whose failure makes every value suspect; a convergence failure is handled per sample.
UNDERMINING_CHECKS = ("gradient_check", "bound_check")


def _check(name: str, status: CheckStatus, detail: str) -> Check:
    title, subject = CHECKS[name]
    return Check(name, title, status, detail, subject)


# ---------------------------------------------------------------------------------------------
# Sanity checks


def _gradient_check_detail(check: GradientCheck) -> str:
    """Both parts of the gradient check in words."""
    decided = sum(int(outcome.decided.sum()) for outcome in check.finite_differences)
    disagreeing = sum(int(outcome.disagreeing.sum()) for outcome in check.finite_differences)
    total = check.directions * len(check.finite_differences)
    fd_text = f"finite differences {check.fd_status.replace('_', ' ')}: {decided} of {total} directions decided"
    if decided:
        fd_text += f", {disagreeing} disagreeing beyond tolerance {fmt(check.tolerance)} plus the error bound"
    if check.fd_status == "not_decided":
        fd_text += (
            " (float32 differences too noisy against these gradients at every step; not evidence of a wrong gradient)"
        )
    if check.adjoint_status == "not_applicable":
        adjoint_text = f"adjoint identity not applicable ({check.adjoint_not_applicable or 'no forward-mode graph'})"
    else:
        worst = max(float(outcome.discrepancies.max()) for outcome in check.adjoint)
        adjoint_text = (f"adjoint identity <u, J^T w> = <J u, w> {check.adjoint_status.replace('_', ' ')}: "
                        f"largest discrepancy {fmt(worst)} (tolerance {fmt(check.adjoint[0].tolerance)})")
    return f"{fd_text}; {adjoint_text}"


def gradient_check(check: GradientCheck | None, gradients: str) -> Check:
    """Graph gradients against finite differences and the adjoint identity (fimaudit/sanity.py).

    Not decided is reported as such and never as failed: float32 differences on flat,
    well-trained models drown in rounding, and a check that turned that into a failure made
    correct audits inconclusive.
    """
    if check is None:
        if gradients == "fd":
            return _check("gradient_check", "not_applicable",
                          "the gradients are finite differences themselves; there is no gradient graph to check")
        return _check("gradient_check", "not_computed",
                      "no gradient check was run in this audit (none was asked for: --check-samples 0)")
    return _check("gradient_check", check.status, _gradient_check_detail(check))  # type: ignore[arg-type]


def convergence_check(samples: Sequence[SampleResult]) -> Check:
    """Iterative estimates say whether they converged in ``diagnostics.converged``."""
    iterative = [s for s in samples if s.kind != "exact"]
    if not iterative:
        return _check("convergence", "not_applicable", "every value is exact (a K x K eigenproblem; nothing iterates)")
    reported = [s for s in iterative if s.converged is not None]
    if not reported:
        return _check("convergence", "not_computed",
                      f"the estimator did not report convergence for its {len(iterative)} estimated values")
    failures = [s.index for s in reported if not s.converged]
    unreported = len(iterative) - len(reported)
    tail = f"; {unreported} did not report" if unreported else ""
    if failures:
        listed = ", ".join(str(i) for i in failures[:10]) + (" ..." if len(failures) > 10 else "")
        return _check("convergence", "failed",
                      f"{len(failures)} of {len(reported)} estimates did not converge (samples {listed}){tail}")
    return _check("convergence", "passed", f"all {len(reported)} estimates converged{tail}")


def _measured_floor(sample: SampleResult) -> float:
    """The smallest value the true lambda_max can have, given how it was measured."""
    if sample.kind == "estimate" and sample.interval is not None:
        return float(sample.interval[0])
    if sample.kind in ("upper_bound", "certified_upper_bound"):
        return 0.0
    return sample.value


def bound_check(samples: Sequence[SampleResult], bound: Bound | None) -> Check:
    """Every measured value at or below the model-wide bound and its own per-sample bound."""
    overall = None if bound is None else bound.value
    per_sample = [(s, s.bound.value) for s in samples if s.bound is not None and s.bound.value is not None]
    if overall is None and not per_sample:
        return _check("bound_check", "not_computed", "no analytic bound was computed for this model")
    violations = []
    if overall is not None:
        for sample in samples:
            floor = _measured_floor(sample)
            if floor > overall * (1 + BOUND_RELATIVE_SLACK):
                violations.append(f"sample {sample.index}: {fmt(floor)} > model bound {fmt(overall)}")
    for sample, value in per_sample:
        floor = _measured_floor(sample)
        if floor > value * (1 + BOUND_RELATIVE_SLACK):
            violations.append(f"sample {sample.index}: {fmt(floor)} > its bound {fmt(value)}")
    scope = []
    if overall is not None:
        scope.append(f"model bound {fmt(overall)}")
    if per_sample:
        scope.append(f"{len(per_sample)} per-sample bounds")
    if violations:
        shown = "; ".join(violations[:5]) + (" ..." if len(violations) > 5 else "")
        return _check("bound_check", "failed", f"{len(violations)} violations of the {' and '.join(scope)}: {shown}")
    return _check("bound_check", "passed",
                  f"every measured value is within the {' and '.join(scope)} (slack {BOUND_RELATIVE_SLACK:g} relative)")


def sanity_checks(samples: Sequence[SampleResult], bound: Bound | None, check: GradientCheck | None,
                  gradients: str) -> tuple[Check, ...]:
    """All checks, in the order the report shows them."""
    return (gradient_check(check, gradients), convergence_check(samples), bound_check(samples, bound))


# ---------------------------------------------------------------------------------------------
# The verdict


def value_range(
    value: float, kind: str, interval: Sequence[float] | None, converged: bool | None
) -> tuple[float, float]:
    """Lowest and highest value a true lambda_max measured as ``value`` of ``kind`` can have.

    The highest is inf when there is no upper limit; an estimate that did not converge keeps
    only the bottom of its interval.
    """
    if kind == "estimate" and converged is False:
        return (float(interval[0]) if interval is not None else value), float("inf")
    if kind == "estimate" and interval is not None:
        return float(interval[0]), float(interval[1])
    if kind == "lower_bound":
        return value, float("inf")
    if kind in ("upper_bound", "certified_upper_bound"):
        return 0.0, value
    return value, value


def sample_range(sample: SampleResult) -> tuple[float, float]:
    """Lowest and highest value the sample's true lambda_max can have (inf: no upper limit)."""
    return value_range(sample.value, sample.kind, sample.interval, sample.converged)


def statistic_bracket(samples: Sequence[SampleResult], statistic: str) -> tuple[float, float | None]:
    """(lowest, highest) possible value of the statistic; highest is None when unbounded."""
    ranges = np.array([sample_range(s) for s in samples], dtype=np.float64)
    return bracket(ranges[:, 0], ranges[:, 1], statistic)


def _subjects(checks: Sequence[Check], status: str, names: Sequence[str] | None = None) -> list[str]:
    return [check.subject for check in checks if check.status == status and (names is None or check.name in names)]


def _undecided_note(checks: Sequence[Check]) -> str:
    """A clause naming checks that could not decide (they do not change the status)."""
    undecided = _subjects(checks, "not_decided")
    if not undecided:
        return ""
    return f" (the {' and the '.join(undecided)} did not decide, which does not undermine the values)"


def decide(samples: Sequence[SampleResult], summary: Summary, checks: Sequence[Check],
           threshold: float | None, statistic: str) -> Verdict:
    """Pass, fail, inconclusive or no threshold, with the reason in one sentence."""
    if statistic not in STATISTICS:
        raise InputError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    value = summary[statistic]
    all_exact = all(s.kind == "exact" for s in samples)
    low, high = (value, value) if all_exact else statistic_bracket(samples, statistic)
    interval = None if all_exact else (low, high)
    note = _undecided_note(checks)

    def verdict(status: str, reason: str) -> Verdict:
        return Verdict(status, threshold, statistic, value, interval, reason + note)  # type: ignore[arg-type]

    name = f"{statistic} lambda_max"
    if threshold is None:
        reason = "no threshold set (--fail-above); nothing to gate"
        failed_any = _subjects(checks, "failed")
        if failed_any:
            reason += f", but the {' and the '.join(failed_any)} failed"
        return verdict("no_threshold", reason)
    limit = fmt(threshold)
    failed = _subjects(checks, "failed", UNDERMINING_CHECKS)
    if failed:
        return verdict("inconclusive", f"the {' and the '.join(failed)} failed, so the measured {name} ({fmt(value)}) "
                                       f"cannot be trusted against the threshold {limit}")
    if high is not None and high <= threshold:
        return verdict("pass", f"{name} {fmt(value)} is at or below the threshold {limit}" if all_exact else
                       f"{name} is at most {fmt(high)} (the top of its range given the intervals and bounds), "
                       f"at or below the threshold {limit}")
    if low > threshold:
        above = sum(1 for s in samples if s.value > threshold)
        reason = (f"{name} {fmt(value)} is above the threshold {limit}" if all_exact else
                  f"{name} is at least {fmt(low)} (the bottom of its range given the intervals and bounds), "
                  f"above the threshold {limit}")
        return verdict("fail", f"{reason} ({above} of {len(samples)} samples above it)")
    if high is None:
        unconverged = sum(1 for s in samples if s.kind == "estimate" and s.converged is False)
        why = f"{unconverged} estimates did not converge" if unconverged else "lower bounds only"
        return verdict("inconclusive", f"{name} is at least {fmt(low)} but has no upper limit ({why}), "
                                       f"so it cannot be shown to be at or below the threshold {limit}")
    return verdict(
        "inconclusive", f"{name} lies between {fmt(low)} and {fmt(high)}, which straddles the threshold {limit}"
    )


@dataclass(frozen=True)
class Judgement:
    """What :func:`judge` decided: the checks (in report order) and the verdict."""

    checks: tuple[Check, ...]
    verdict: Verdict


def robust_accuracy_check(attack: AttackSummary) -> Check:
    """``--fail-robust-below R``: robust accuracy at every ``--attack-eps`` radius at least R.

    Robust accuracy is the fraction of samples whose predicted class no verified adversarial
    example within eps changed: an upper bound on the true one (a stronger attack can only lower
    it). A failure therefore stands on forward-run evidence; a pass only says these attacks, at
    their budget, did not find enough examples.
    """
    if attack.status == "not_run":
        status: CheckStatus = "not_computed" if attack.robust_below is not None else "not_applicable"
        return _check("robust_accuracy", status, f"the attacks did not run ({attack.reason})")
    if not attack.success_rate_by_eps:
        return _check("robust_accuracy", "not_applicable", "no --attack-eps radii: robust accuracy was not measured")
    measured = ", ".join(f"{fmt(row.robust_accuracy, 3)} at eps {fmt(row.eps)}" for row in attack.success_rate_by_eps)
    norm = f"l{attack.norm}"
    if attack.robust_below is None:
        return _check("robust_accuracy", "not_applicable",
                      f"no --fail-robust-below; robust accuracy ({norm}) {measured}")
    below = [row for row in attack.success_rate_by_eps if row.robust_accuracy < attack.robust_below]
    limit = fmt(attack.robust_below, 3)
    if below:
        worst = min(below, key=lambda row: row.robust_accuracy)
        return _check("robust_accuracy", "failed",
                      f"robust accuracy ({norm}) is {fmt(worst.robust_accuracy, 3)} at eps {fmt(worst.eps)}, below "
                      f"{limit}, shown by forward-verified adversarial examples ({measured})")
    return _check("robust_accuracy", "passed",
                  f"robust accuracy ({norm}) at least {limit} at every radius ({measured}); an upper bound: "
                  "these attacks at their budget found no more examples, which does not certify robustness")


def gate_robustness(verdict: Verdict, checks: Sequence[Check]) -> Verdict:
    """A failed robust-accuracy gate fails the audit, whatever lambda_max says.

    The failure rests on verified adversarial examples, so it stands even when a check that
    undermines lambda_max made the lambda_max verdict inconclusive.
    """
    gate = next((c for c in checks if c.name == "robust_accuracy"), None)
    if gate is None or gate.status not in ("failed", "not_computed"):
        return verdict
    status: VerdictStatus
    if gate.status == "not_computed":  # asked for, but nothing measured it: the gate cannot pass
        if verdict.status not in ("pass", "no_threshold"):
            return verdict
        status, reason = "inconclusive", f"--fail-robust-below was set but {gate.detail}; lambda_max: {verdict.reason}"
    elif verdict.status == "no_threshold":
        status, reason = "fail", f"{gate.detail} (lambda_max is not gated: no --fail-above)"
    else:
        status, reason = "fail", f"{gate.detail}; lambda_max: {verdict.reason}"
    return Verdict(status, verdict.threshold, verdict.statistic, verdict.value, verdict.interval, reason)


def judge(samples: Sequence[SampleResult], summary: Summary, bound: Bound | None, check: GradientCheck | None,
          gradients: str, threshold: float | None, statistic: str, attack: AttackSummary | None = None) -> Judgement:
    """The sanity checks of an audit and its verdict (with the robust-accuracy gate when attacks ran)."""
    checks = sanity_checks(samples, bound, check, gradients)
    if attack is not None:  # the attack stage's check is shown only in audits that ran it (--attack)
        checks = (*checks, robust_accuracy_check(attack))
    if any(sample.certificates for sample in samples):  # --certify (issue 10)
        checks = (*checks, certificate_check(samples, threshold))
    verdict = gate_robustness(decide(samples, summary, checks, threshold, statistic), checks)
    return Judgement(checks, note_certified(verdict, checks))


def certificate_check(samples: Sequence[SampleResult], threshold: float | None) -> Check:
    """Whether every audited input has lambda_max <= T certified over a listed eps-ball (the largest such eps).

    Certificates only ever add evidence for a pass: B above T says the bound is loose there, not
    that the model fails (the measured lambda_max decides that), so this check passes or stays
    undecided, never fails.
    """
    first = samples[0].certificates[0]
    norm = f"l{first.norm}"
    if threshold is None:
        return _check("certified", "not_applicable", "no --fail-above: certificates reported, nothing to compare")
    radii = sorted({c.epsilon for sample in samples for c in sample.certificates})
    holding = [eps for eps in radii
               if all(any(c.epsilon == eps and c.value <= threshold for c in s.certificates) for s in samples)]
    if holding:
        return _check("certified", "passed", f"lambda_max <= {fmt(threshold)} certified within eps {fmt(holding[-1])} "
                      f"({norm}) of every audited input")
    above = sum(1 for s in samples if not any(c.value <= threshold for c in s.certificates))
    return _check("certified", "not_decided", f"at the listed radii ({norm}) the certified bound exceeds "
                  f"{fmt(threshold)} on {above} of {len(samples)} samples (the bound is loose there: not a failure)")


def note_certified(verdict: Verdict, checks: Sequence[Check]) -> Verdict:
    """A pass whose certificate check passed says what is certified, beside what was measured."""
    check = next((c for c in checks if c.name == "certified"), None)
    if check is None or check.status != "passed" or verdict.status != "pass":
        return verdict
    reason = f"{verdict.reason}; certified: {check.detail}"
    return Verdict(verdict.status, verdict.threshold, verdict.statistic, verdict.value, verdict.interval, reason)
