"""Sanity checks of an audit, derived from its JSON document.

Three questions a reviewer asks before trusting the numbers:

- gradient check: do the gradients agree with finite differences on a few samples? (written by
  the gradient-graph stage as ``document["gradient_check"]``);
- estimator convergence: did every iterative estimate converge? (``diagnostics.converged``);
- bound >= measured: is every measured lambda_max at or below the analytic bound?

Each check has a status: ``passed``, ``failed``, ``not_decided`` (it ran but could not tell, e.g.
finite differences drowned in float32 rounding on a flat model: no evidence either way, so it does
not undermine the values), ``not_computed`` (it could run, but did not) or ``not_applicable``
(nothing to check, e.g. exact values have no iteration). A check that did not
run is reported as such, never dropped, so a report cannot look cleaner than the audit was.
"""

from __future__ import annotations

from typing import Any

from fimaudit.report.formatting import fmt, present

PASSED, FAILED, NOT_COMPUTED, NOT_APPLICABLE = "passed", "failed", "not_computed", "not_applicable"
NOT_DECIDED = "not_decided"
CHECK_STATUSES = (PASSED, FAILED, NOT_DECIDED, NOT_COMPUTED, NOT_APPLICABLE)

# A measured value may exceed a tight bound by the gradients' own error (finite differences in
# float32 are good to about 1e-4 relative); beyond this it is a contradiction.
BOUND_RELATIVE_SLACK = 1e-3


def bound_value(entry: Any) -> float | None:
    """A bound given as a number or as {value, kind}; None when absent."""
    if entry is None:
        return None
    if isinstance(entry, dict):
        value = entry.get("value")
        return None if value is None else float(value)
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return float(entry)
    return None


def _check(name: str, title: str, status: str, detail: str) -> dict[str, str]:
    return {"name": name, "title": title, "status": status, "detail": detail}


def _gradient_check_detail(recorded: dict[str, Any]) -> str:
    """Both parts of the gradient check in words (fimaudit/sanity.py writes them)."""
    fd, adjoint = recorded.get("finite_differences"), recorded.get("adjoint")
    if not isinstance(fd, dict) or not isinstance(adjoint, dict):
        details = {key: value for key, value in recorded.items() if key not in ("passed", "status")}
        return present(details) if details else ""
    parts = []
    per_sample = [s for s in fd.get("per_sample") or [] if isinstance(s, dict)]
    decided = sum(int(s.get("directions_decided") or 0) for s in per_sample)
    disagreeing = sum(int(s.get("directions_disagreeing") or 0) for s in per_sample)
    total = int(recorded.get("directions_per_sample") or 0) * len(per_sample)
    fd_text = f"finite differences {str(fd.get('status', '')).replace('_', ' ')}: {decided} of {total} directions decided"
    if decided:
        fd_text += f", {disagreeing} disagreeing beyond tolerance {fmt(recorded.get('tolerance'))} plus the error bound"
    if fd.get("status") == NOT_DECIDED:
        fd_text += " (float32 differences too noisy against these gradients at every step; not evidence of a wrong gradient)"
    parts.append(fd_text)
    adjoint_status = str(adjoint.get("status", "")).replace("_", " ")
    if adjoint.get("status") == NOT_APPLICABLE:
        parts.append(f"adjoint identity not applicable ({adjoint.get('reason') or 'no forward-mode graph'})")
    else:
        worst = max((float(s["max_relative_discrepancy"]) for s in adjoint.get("per_sample") or []
                     if isinstance(s, dict) and s.get("max_relative_discrepancy") is not None), default=None)
        tolerance = next((s.get("tolerance") for s in adjoint.get("per_sample") or [] if isinstance(s, dict)), None)
        parts.append(f"adjoint identity <u, J^T w> = <J u, w> {adjoint_status}"
                     + (f": largest discrepancy {fmt(worst)} (tolerance {fmt(tolerance)})" if worst is not None else ""))
    return "; ".join(parts)


def gradient_check(document: dict[str, Any]) -> dict[str, str]:
    """Graph gradients against finite differences and the adjoint identity, as recorded.

    Three outcomes (fimaudit/sanity.py): passed, failed (a disagreement beyond the estimated
    finite-difference error, or a broken adjoint identity) and not decided (the differences were
    too noisy to tell at every step tried). Not decided is reported as such and never as failed:
    float32 differences on flat, well-trained models drown in rounding, and a check that turned
    that into a failure made correct audits inconclusive.
    """
    title = "Gradient check (graph gradients vs finite differences)"
    recorded = document.get("gradient_check")
    if recorded is None:
        if document["method"].get("gradients") == "fd":
            return _check("gradient_check", title, NOT_APPLICABLE,
                          "the gradients are finite differences themselves; there is no gradient graph to check")
        return _check("gradient_check", title, NOT_COMPUTED, "no gradient check was run in this audit")
    if not isinstance(recorded, dict) or ("passed" not in recorded and recorded.get("status") not in (PASSED, FAILED, NOT_DECIDED)):
        return _check("gradient_check", title, NOT_COMPUTED, f"recorded without a pass/fail outcome: {present(recorded)}")
    if recorded.get("status") in (PASSED, FAILED, NOT_DECIDED):
        status = recorded["status"]
    else:
        status = PASSED if recorded["passed"] else FAILED
    return _check("gradient_check", title, status, _gradient_check_detail(recorded))


def convergence_check(document: dict[str, Any]) -> dict[str, str]:
    """Iterative estimates say whether they converged in ``diagnostics.converged``."""
    title = "Estimator convergence"
    samples = document["samples"]
    iterative = [s for s in samples if s["kind"] != "exact"]
    if not iterative:
        return _check("convergence", title, NOT_APPLICABLE, "every value is exact (a K x K eigenproblem; nothing iterates)")
    reported = [s for s in iterative if isinstance(s.get("diagnostics"), dict) and "converged" in s["diagnostics"]]
    if not reported:
        return _check("convergence", title, NOT_COMPUTED,
                      f"the estimator did not report convergence for its {len(iterative)} estimated values")
    failures = [s["index"] for s in reported if not s["diagnostics"]["converged"]]
    unreported = len(iterative) - len(reported)
    tail = f"; {unreported} did not report" if unreported else ""
    if failures:
        listed = ", ".join(str(i) for i in failures[:10]) + (" ..." if len(failures) > 10 else "")
        return _check("convergence", title, FAILED,
                      f"{len(failures)} of {len(reported)} estimates did not converge (samples {listed}){tail}")
    return _check("convergence", title, PASSED, f"all {len(reported)} estimates converged{tail}")


def _measured_floor(sample: dict[str, Any]) -> float:
    """The smallest value the true lambda_max can have, given how it was measured."""
    if sample["kind"] == "estimate" and sample.get("interval"):
        return float(sample["interval"][0])
    if sample["kind"] == "upper_bound":
        return 0.0
    return float(sample["lambda_max"])


def bound_check(document: dict[str, Any]) -> dict[str, str]:
    """Every measured value at or below the model-wide bound and its own per-sample bound."""
    title = "Analytic bound >= measured"
    overall = bound_value(document.get("bound"))
    per_sample = [(s, bound_value(s.get("bound"))) for s in document["samples"]]
    per_sample = [(s, b) for s, b in per_sample if b is not None]
    if overall is None and not per_sample:
        return _check("bound_check", title, NOT_COMPUTED, "no analytic bound was computed for this model")
    violations = []
    for sample in document["samples"]:
        floor = _measured_floor(sample)
        if overall is not None and floor > overall * (1 + BOUND_RELATIVE_SLACK):
            violations.append(f"sample {sample['index']}: {fmt(floor)} > model bound {fmt(overall)}")
    for sample, value in per_sample:
        floor = _measured_floor(sample)
        if floor > value * (1 + BOUND_RELATIVE_SLACK):
            violations.append(f"sample {sample['index']}: {fmt(floor)} > its bound {fmt(value)}")
    scope = []
    if overall is not None:
        scope.append(f"model bound {fmt(overall)}")
    if per_sample:
        scope.append(f"{len(per_sample)} per-sample bounds")
    if violations:
        shown = "; ".join(violations[:5]) + (" ..." if len(violations) > 5 else "")
        return _check("bound_check", title, FAILED, f"{len(violations)} violations of the {' and '.join(scope)}: {shown}")
    return _check("bound_check", title, PASSED,
                  f"every measured value is within the {' and '.join(scope)} (slack {BOUND_RELATIVE_SLACK:g} relative)")


def sanity_checks(document: dict[str, Any]) -> list[dict[str, str]]:
    """All checks, in the order the report shows them."""
    return [gradient_check(document), convergence_check(document), bound_check(document)]
