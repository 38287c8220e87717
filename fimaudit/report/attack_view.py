"""The attack section of the HTML report, prepared from the JSON document (``attack_summary``, ``samples[].attack``).

What it shows: a plain statement of what was verified and what was not; the log-log scatter of
lambda_max against the verified epsilon_min with Spearman and Kendall and their bootstrap
intervals; the robust-accuracy table per ``--attack-eps`` radius; the correlation per predicted
class; the quadratic-regime curve of the most sensitive samples; for image inputs, the input
beside its adversarial example, the perturbation and the top eigenvector. Nothing is decided
here (the robust-accuracy gate is verdict.py's); numbers are formatted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fimaudit.report.attack_pictures import AdversarialPicture
from fimaudit.report.charts import Chart, attack_scatter, quadratic_chart
from fimaudit.report.formatting import MISSING, fmt
from fimaudit.report.view import Row, Table, most_sensitive

#: Samples whose quadratic-regime curve is drawn (the most sensitive with a check).
QUADRATIC_CURVES = 3


@dataclass
class AttackSectionView:
    """Everything the attack section shows, prepared."""

    statement: list[str]
    rows: list[Row]
    scatter: Chart | None
    scatter_missing: str
    robust: Table | None
    per_class: Table | None
    samples: Table
    curves: list[Chart] = field(default_factory=list)
    pictures: list[AdversarialPicture] = field(default_factory=list)
    pictures_note: str = ""


def _interval(correlation: dict[str, Any], name: str) -> str:
    intervals = correlation.get("intervals") or {}
    bounds = intervals.get(name)
    if correlation.get(name) is None:
        return "not computed (fewer than 3 pairs, or tied ranks)"
    level = intervals.get("confidence", 0.95)
    shown = f"[{fmt(bounds[0], 3)}, {fmt(bounds[1], 3)}]" if bounds else MISSING
    return f"{fmt(correlation[name], 3)} ({fmt(100 * level, 3)}% bootstrap interval {shown})"


def statement(summary: dict[str, Any], samples: list[dict[str, Any]]) -> list[str]:
    """What was verified, in plain words, and what the numbers are not."""
    if summary["status"] == "not_run":
        return [f"The attacks did not run: {summary['reason']}."]
    norm = f"l{summary['norm']}"
    found = summary["verified"]
    lines = [
        f"{found} of {summary['attempted']} samples have an adversarial example found by DeepFool and narrowed "
        f"by bisection along its ray, each re-run by a plain forward pass of the same ONNX Runtime session: "
        f"the predicted class changed, and epsilon_min is the {norm} norm of the perturbation actually applied "
        "(after clipping to the input range and the cast to the model's input type).",
        "epsilon_min is an upper bound on the distance to the nearest input of another class (a stronger attack "
        "can only lower it); robust accuracy is likewise an upper bound: a pass of these attacks does not certify "
        "robustness.",
    ]
    missing = summary["attempted"] - found
    if missing:
        reasons = sorted({s["attack"]["reason"] for s in samples if s.get("attack") and s["attack"]["reason"]})
        lines.append(f"{missing} samples have no verified example ({'; '.join(reasons) or 'no reason recorded'}); "
                     "they are left out of the correlation, not counted as infinitely robust.")
    if any("finite-difference" in (s.get("attack") or {}).get("method", "") for s in samples):
        lines.append("The model has no gradient graph here: the attacks used finite-difference gradients.")
    return lines


def summary_rows(summary: dict[str, Any]) -> list[Row]:
    """Norm, gradients, range, budget, correlation and the quadratic regime."""
    span = summary.get("input_range")
    radius = summary["quadratic_radius"]
    return [
        Row("Norm", f"l{summary['norm']}"),
        Row("Gradients", summary["gradients"]),
        Row("Input range (clipping)", "none" if span is None else f"[{fmt(span[0])}, {fmt(span[1])}]"),
        Row("Budget per sample (minimum-norm attack)", f"{summary['budget']} model evaluations"),
        Row("Verified examples", f"{summary['verified']} of {summary['attempted']} samples"),
        Row(f"Spearman rho of lambda_max ({summary['lambda_kind']}) and 1/epsilon_min",
            _interval(summary, "spearman")),
        Row("Kendall tau", _interval(summary, "kendall")),
        Row("Quadratic regime (median radius t)",
            f"{fmt(radius['median'])} over {radius['checked']} samples with a kept eigenvector"
            + (f"; {radius['without_regime']} without a regime at the first grid point" if radius["without_regime"]
               else "")),
    ]


def robust_table(summary: dict[str, Any]) -> Table | None:
    """Success rate and robust accuracy at each ``--attack-eps`` radius."""
    rows = summary["success_rate_by_eps"]
    if not rows:
        return None
    return Table(
        f"Robust accuracy (l{summary['norm']}): the fraction of samples whose prediction no verified example within "
        "eps changed",
        ["eps", "Attack success", "PGD alone", "Robust accuracy (upper bound)", "Samples"],
        [[fmt(r["eps"]), f"{fmt(100 * r['success_rate'], 3)}%", f"{fmt(100 * r['pgd_success_rate'], 3)}%",
          f"{fmt(100 * r['robust_accuracy'], 3)}%", str(r["samples"])] for r in rows],
    )


def per_class_table(summary: dict[str, Any]) -> Table | None:
    """The rank correlation within each predicted class."""
    entries = summary.get("per_class") or []
    if not entries:
        return None
    return Table("Correlation per predicted class", ["Class", "Pairs", "Spearman rho", "Kendall tau"],
                 [[str(e["class"]), str(e["count"]), _interval(e, "spearman"), _interval(e, "kendall")]
                  for e in entries])


def sample_table(samples: list[dict[str, Any]], count: int = 10) -> Table:
    """The most sensitive samples' attacks."""
    rows = []
    for s in most_sensitive(samples, count):
        attack = s.get("attack") or {}
        rows.append([str(s["index"]), fmt(s["lambda_max"]), fmt(attack.get("epsilon_min")),
                     "yes" if attack.get("verified") else "no", str(s["predicted_class"]),
                     MISSING if attack.get("adversarial_class") is None else str(attack["adversarial_class"]),
                     attack.get("method", MISSING), fmt(attack.get("evaluations"))])
    return Table("Attacks on the most sensitive samples",
                 ["Sample", "lambda_max", "epsilon_min", "Verified", "Class", "Adversarial class", "Method",
                  "Evaluations"], rows)


def attack_view(document: dict[str, Any], pictures: list[AdversarialPicture] | None = None,
                pictures_note: str = "") -> AttackSectionView | None:
    """The attack section, or None when the audit ran no attacks."""
    summary = document.get("attack_summary")
    if summary is None:
        return None
    samples = document["samples"]
    points = [(s["index"], float(s["lambda_max"]), float(s["attack"]["epsilon_min"])) for s in samples
              if s.get("attack") and s["attack"]["epsilon_min"] is not None]
    scatter, missing = None, ""
    if len(points) >= 2:
        caption = f"Spearman {_interval(summary, 'spearman')}; Kendall {_interval(summary, 'kendall')}"
        scatter = attack_scatter(points, summary["norm"], caption)
    else:
        missing = f"not drawn: {len(points)} samples with a verified example"
    curves = []
    for s in most_sensitive([s for s in samples if (s.get("attack") or {}).get("quadratic")], QUADRATIC_CURVES):
        check = s["attack"]["quadratic"]
        curves.append(quadratic_chart(s["index"], check["t"], check["kl_plus"], check["quadratic"], check["radius"]))
    return AttackSectionView(
        statement=statement(summary, samples),
        rows=summary_rows(summary) if summary["status"] == "run" else [],
        scatter=scatter,
        scatter_missing=missing,
        robust=robust_table(summary),
        per_class=per_class_table(summary),
        samples=sample_table(samples),
        curves=curves,
        pictures=list(pictures or []),
        pictures_note=pictures_note or ("" if pictures else "not drawn (no pictures were passed to the report)"),
    )
