"""The per-sample bound the report shows: the tightest of the analytic bound and the local certificates.

Why: the analytic per-sample bound (fimaudit/bounds) multiplies global layer norms and is often
10^8 or more times lambda_max; a local certificate B(x, eps) (fimaudit/certify, ``--certify``) holds
over a ball that contains x, so it bounds lambda_max(F(x)) too and is usually within a few times
of it. Issue 10 asks that the report's per-sample bound be the certificate where one exists. The
two hold over different sets and in different arithmetic, so the cell always says which one it is.

Only what is shown changes: the JSON keeps ``samples[].bound`` and ``samples[].certificates``
as they are, and the verdict does not read this (docs/CERTIFICATES.md, section 7, says why).
"""

from __future__ import annotations

from typing import Any

from fimaudit.report.formatting import MISSING, fmt


def tightest_bound(sample: dict[str, Any]) -> tuple[float, str] | None:
    """(value, the set it holds over) of the smallest bound on this sample's lambda_max, or None.

    Any certificate counts (every ball is centred at x, so each contains x); B is not always
    monotone in eps, so the smallest value is taken rather than the smallest radius's.
    """
    candidates: list[tuple[float, str]] = []
    bound = sample.get("bound")
    if bound is not None and bound.get("value") is not None:
        candidates.append((float(bound["value"]), "analytic, at x"))
    for certificate in sample.get("certificates") or ():
        candidates.append((float(certificate["value"]),
                           f"certified over the l{certificate['norm']} ball of radius {fmt(certificate['epsilon'])}"))
    return min(candidates, key=lambda candidate: candidate[0]) if candidates else None


def bound_cell(sample: dict[str, Any]) -> str:
    """The report's text for the sample's bound: value and set, or the missing marker."""
    best = tightest_bound(sample)
    return MISSING if best is None else f"{fmt(best[0])} ({best[1]})"
