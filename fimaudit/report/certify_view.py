"""The certificate section of the HTML report (``certification``, ``samples[].certificates``).

What it shows: the plain statement of what is certified and what is not; per sample the
certified B(x, eps) at each radius beside the measured lambda_max(x), the unstable activations
and the certified radius; B against eps for the most sensitive samples. Nothing is decided here
(the "certified" check is verdict.py's); numbers are formatted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fimaudit.report.charts import Chart, certificate_chart
from fimaudit.report.formatting import MISSING, fmt
from fimaudit.report.view import Row, Table, most_sensitive

#: Samples whose B(x, eps) curve is drawn (the most sensitive).
CURVES = 3


@dataclass
class CertifySectionView:
    """Everything the certificate section shows, prepared."""

    statement: list[str]
    rows: list[Row]
    samples: Table
    curves: list[Chart] = field(default_factory=list)


def certify_view(document: dict[str, Any]) -> CertifySectionView | None:
    """The section, or None when the audit ran without ``--certify``."""
    certification = document.get("certification")
    if certification is None:
        return None
    norm = f"l{certification['norm']}"
    epsilons = list(certification["epsilons"])
    rows = [
        Row("ball", f"{norm}, radii {', '.join(fmt(e) for e in epsilons)}"),
        Row("input range", MISSING if certification["input_range"] is None
            else f"[{fmt(certification['input_range'][0])}, {fmt(certification['input_range'][1])}]"),
        Row("certified radius", "not computed (no --fail-above)" if certification["threshold"] is None
            else f"largest eps with B(x, eps) <= {fmt(certification['threshold'])}, to "
            f"{fmt(100 * certification['radius_tolerance'])}% relative"),
    ]
    samples = most_sensitive(document["samples"], len(document["samples"]))
    columns = ["sample", "lambda_max(x)", *[f"B at eps {fmt(e)}" for e in epsilons], "unstable (largest eps)",
               "certified radius"]
    table_rows = []
    for sample in samples:
        by_eps = {c["epsilon"]: c for c in sample["certificates"]}
        cells = [fmt(by_eps[e]["value"]) if e in by_eps else MISSING for e in epsilons]
        last = by_eps.get(epsilons[-1]) if epsilons else None
        radius = sample.get("certified_radius")
        table_rows.append([str(sample["index"]), fmt(sample["lambda_max"]), *cells,
                           MISSING if last is None else str(last["unstable_activations"]),
                           MISSING if radius is None else fmt(radius)])
    curves = [certificate_chart(s["index"], [c["epsilon"] for c in s["certificates"]],
                                [c["value"] for c in s["certificates"]], float(s["lambda_max"]), norm)
              for s in samples[:CURVES] if s["certificates"]]
    return CertifySectionView(
        statement=[certification["statement"], certification["not_certified"],
                   "As eps -> 0, B(x, eps) tends to lambda_max(F(x)) itself (each certificate's at_point); "
                   "its growth with eps is the price of covering the whole ball (docs/CERTIFICATES.md)."],
        rows=rows,
        samples=Table("Certified bound per sample (most sensitive first)", columns, table_rows),
        curves=curves,
    )
