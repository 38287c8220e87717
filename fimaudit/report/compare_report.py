"""The comparison document (JSON) and view (HTML) of ``fimaudit compare``: serialising and rendering only.

Which models are compared, what agreement means and whether the comparison passes are decided in
the domain (fimaudit/compare.py, ``check_consistency`` on typed audits); this module writes that
decision out as JSON and lays it out for templates/compare.html.j2: a pair-by-pair agreement
table, a log-log scatter of lambda_max per pair, and the samples on which each pair disagrees most.
The ranking by a statistic of lambda_max and by the analytic bound is computed on the documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from fimaudit.compare import DEFAULT_RTOL, EXPECTED_RTOL, LAMBDA_FLOOR, Consistency, check_consistency, model_labels
from fimaudit.compare_audit import Comparison
from fimaudit.report.charts import Chart, ScatterPoint, StripRow, scatter_chart, strip_chart
from fimaudit.report.document import build_document
from fimaudit.report.formatting import fmt, shape_text
from fimaudit.report.images import Picture
from fimaudit.report.view import VERDICT_HEADLINES, Row, Table, bound_value
from fimaudit.statistics import STATISTICS

__all__ = ["DEFAULT_RTOL", "build_comparison_document", "build_comparison_view"]

#: Version of the comparison document: 2 since issue 17 (``agreement`` became an object with
#: ``pairs``; ``consistency.consistent`` became ``consistency.status`` and ``passed``). Each
#: model's audit document under ``models[].audit`` keeps its own ``schema_version``.
COMPARISON_SCHEMA_VERSION = 2


def _kendall_tau(first: list[float], second: list[float]) -> float | None:
    """Rank agreement of two orderings (1 same order, -1 reversed); None under two items."""
    n = len(first)
    if n < 2:
        return None
    concordant = discordant = 0
    for i, j in combinations(range(n), 2):
        product = np.sign(first[i] - first[j]) * np.sign(second[i] - second[j])
        concordant += product > 0
        discordant += product < 0
    pairs = n * (n - 1) / 2
    return float((concordant - discordant) / pairs)


def ranking(labelled: list[tuple[str, dict[str, Any]]], statistic: str) -> dict[str, Any]:
    """Models from least to most sensitive by ``statistic``; by bound too when every model has one."""
    measured = sorted(labelled, key=lambda item: item[1]["summary"][statistic])
    by_measured = [
        {"rank": r + 1, "model": label, "value": doc["summary"][statistic]} for r, (label, doc) in enumerate(measured)
    ]
    bounds = {label: bound_value(doc.get("bound")) for label, doc in labelled}
    missing = [label for label, value in bounds.items() if value is None]
    known = {label: value for label, value in bounds.items() if value is not None}
    entry: dict[str, Any] = {"statistic": statistic, "by_measured": by_measured, "by_bound": None,
                             "bound_missing": missing, "kendall_tau": None}
    if not missing:
        ordered = sorted(labelled, key=lambda item: known[item[0]])
        entry["by_bound"] = [
            {"rank": r + 1, "model": label, "value": known[label]} for r, (label, _) in enumerate(ordered)
        ]
        entry["kendall_tau"] = _kendall_tau([doc["summary"][statistic] for _, doc in labelled],
                                            [known[label] for label, _ in labelled])
    entry["by_attack"] = attack_ranking(labelled, statistic)
    return entry


def attack_ranking(labelled: list[tuple[str, dict[str, Any]]], statistic: str) -> list[dict[str, Any]] | None:
    """Per ``--attack-eps`` radius: models from least to most attacked, and Kendall's tau with ``statistic``.

    The attack success rate is the fraction of samples with a forward-verified adversarial example
    within eps; tau compares it with the lambda_max statistic over the models (1: lambda_max orders
    the models exactly as the attacks do). None unless every model ran the same attacks.
    """
    summaries = [doc.get("attack_summary") for _, doc in labelled]
    if not summaries or any(s is None or s["status"] != "run" for s in summaries):
        return None
    radii = [[row["eps"] for row in s["success_rate_by_eps"]] for s in summaries]  # type: ignore[index]
    norms = {s["norm"] for s in summaries}  # type: ignore[index]
    if any(r != radii[0] for r in radii) or len(norms) != 1 or not radii[0]:
        return None
    lambdas = [doc["summary"][statistic] for _, doc in labelled]
    norm = next(iter(norms))
    entries = []
    for position, eps in enumerate(radii[0]):
        rates = [s["success_rate_by_eps"][position]["success_rate"] for s in summaries]  # type: ignore[index]
        order = sorted(zip([label for label, _ in labelled], rates, strict=True), key=lambda item: item[1])
        entries.append({
            "eps": eps,
            "norm": norm,
            "models": [{"rank": r + 1, "model": label, "success_rate": rate} for r, (label, rate) in enumerate(order)],
            "kendall_tau": _kendall_tau(lambdas, rates),
        })
    return entries


def build_comparison_document(
    comparison: Comparison,
    rtol: float = DEFAULT_RTOL,
    statistic: str = "median",
    consistency: Consistency | None = None,
) -> dict[str, Any]:
    """The comparison as JSON-ready data; each model's full audit document is kept under ``audit``.

    ``consistency``: the domain's decision (default: every comparable pair checked within ``rtol``).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"unknown ranking statistic {statistic!r}")
    if consistency is None:
        consistency = check_consistency(comparison.outcomes, rtol)
    labels = model_labels([outcome.path for outcome in comparison.outcomes])
    facts = {f.label: f for f in consistency.models}
    models, labelled = [], []
    for label, outcome in zip(labels, comparison.outcomes, strict=True):
        common = {"label": label, "path": outcome.path, "note": outcome.note,
                  "layout": None if outcome.layout is None else outcome.layout.to_dict()}
        if outcome.result is None:
            models.append({**common, "status": "error", "error": outcome.error, "audit": None})
            continue
        document = build_document(outcome.result)
        labelled.append((label, document))
        models.append({
            **common,
            "status": "audited",
            "error": None,
            "sha256": document["model"]["sha256"],
            "producer": document["model"]["producer"],
            "facts": facts[label].to_dict(),
            "summary": document["summary"],
            "bound": document["bound"],
            "audit": document,
        })
    first = labelled[0][1]
    config = comparison.config
    return {
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "kind": "comparison",
        "tool": first["tool"],
        "created_at": comparison.started_at,
        "environment": first["environment"],
        "data": {
            key: first["data"][key] for key in ("source", "synthetic", "count", "sample_shape") if key in first["data"]
        },
        "method": {
            "estimator": config.method,
            "gradients": config.gradients,
            "seed": config.seed,
            "budget": config.budget,
        },
        "models": models,
        "ranking": ranking(labelled, statistic),
        "agreement": {
            "mode": consistency.mode,
            "reference": consistency.reference,
            "groups": [list(group) for group in consistency.groups],
            "rtol": rtol,
            "lambda_floor": LAMBDA_FLOOR,
            "expected_rtol": dict(EXPECTED_RTOL),
            "pairs": [pair.to_dict() for pair in consistency.pairs],
        },
        "consistency": consistency.to_dict(),
    }


# ----------------------------------------------------------------------------------------------
# The view of the comparison report (templates/compare.html.j2)


#: Headline of the comparison report, per consistency status.
HEADLINES = {"agree": "AGREE", "disagree": "DISAGREE", "not_checked": "NOT CHECKED"}
_STATUS_TEXT = {"agree": "agree", "disagree": "DISAGREE", "not_checked": "not checked"}


@dataclass
class PairView:
    title: str
    status: str
    label: str
    reason: str
    tolerance: str
    expected: list[str]
    evidence: Table
    chart: Chart | None
    worst: Table | None
    #: The inputs of the samples in ``worst``, drawn (empty when the data is not image-like).
    pictures: list[Picture]


@dataclass
class ComparisonView:
    title: str
    created_at: str
    tool_version: str
    status: str
    headline: str
    reason: str
    setup: list[Row]
    chart: Chart
    models: Table
    failures: Table | None
    ranking: Table
    bound_ranking: Table | None
    bound_note: str
    pairs_table: Table | None
    pairs: list[PairView]
    agreement_note: str
    environment: list[Row]
    pictures_note: str = ""
    #: --attack: per radius, the models ranked by attack success beside the lambda_max ranking.
    attack_rankings: list[Table] = field(default_factory=list)


def attack_ranking_tables(rank: dict[str, Any]) -> list[Table]:
    """One table per radius: rank by attack success, the success rate, and tau with the lambda_max ranking."""
    tables = []
    for entry in rank.get("by_attack") or []:
        tau = "n/a" if entry["kendall_tau"] is None else fmt(entry["kendall_tau"], 3)
        tables.append(Table(
            f"Ranking by attack success at l{entry['norm']} eps {fmt(entry['eps'])} (1 = least attacked); "
            f"Kendall's tau with the {rank['statistic']} lambda_max ranking: {tau}",
            ["Rank", "Model", "Attack success (verified)"],
            [[str(r["rank"]), r["model"], f"{fmt(100 * r['success_rate'], 3)}%"] for r in entry["models"]],
        ))
    return tables


def _pair_view(pair: dict[str, Any], pictures: dict[int, Picture]) -> PairView:
    a, b = pair["a"], pair["b"]
    evidence = pair["evidence"]
    rows = [[name.replace("_", " ").capitalize(), *[fmt(v) if isinstance(v, (int, float)) else str(v) for v in values]]
            for name, values in evidence.items()]
    evidence_table = Table("Evidence (shown, not used as a gate)", ["", a, b], rows)
    chart = worst = None
    if pair["per_sample"]:
        points = [ScatterPoint(s["index"], s["lambda_a"], s["lambda_b"], s["agree"]) for s in pair["per_sample"]]
        chart = scatter_chart(points, a, b)
        worst = Table("Samples on which they differ most", [
            "Sample", f"lambda_max {a}", f"lambda_max {b}", "Relative difference", "Class", "Top probability", "Agree"],
            [[str(s["index"]), fmt(s["lambda_a"]), fmt(s["lambda_b"]), fmt(s["relative_difference"], 3),
              f"{s['class_a']} / {s['class_b']}", f"{fmt(s['top_prob_a'], 4)} / {fmt(s['top_prob_b'], 4)}",
              "yes" if s["agree"] else f"NO: {s['why']}"] for s in pair["worst_samples"]])
    tolerance = (f"lambda_max within {fmt(pair['rtol'], 3)} relative (on a scale no smaller than "
                 f"{fmt(pair['lambda_floor'], 3)}), top probability within {fmt(pair['rtol'], 3)}, same class; "
                 f"at least {fmt(100 * pair['min_agreement'], 3)}% of samples")
    if pair["rtol_reason"]:
        tolerance += f"; tolerance {pair['rtol_reason']}"
    drawn = [pictures[s["index"]] for s in pair["worst_samples"] if s["index"] in pictures] if worst else []
    return PairView(f"{a} vs {b}", pair["status"], _STATUS_TEXT[pair["status"]], pair["reason"], tolerance,
                    pair["expected_deviations"], evidence_table, chart, worst, drawn)


def _pairs_table(pairs: list[dict[str, Any]]) -> Table | None:
    if not pairs:
        return None
    rows = []
    for p in pairs:
        fraction = "—" if p["fraction_agreeing"] is None else f"{p['agreeing_samples']} of {p['samples']}"
        rows.append([p["a"], p["b"], _STATUS_TEXT[p["status"]], fraction, fmt(p["max_relative_difference"], 3),
                     "—" if p["worst_sample"] is None else str(p["worst_sample"]), fmt(p["rtol"], 3),
                     "; ".join(p["expected_deviations"]) or "none named"])
    return Table("Pair by pair", ["Model A", "Model B", "Agreement", "Samples that agree", "Max lambda_max difference",
                                  "Worst sample", "Tolerance", "Expected deviations"], rows)


_MODE_NOTES = {
    "auto": "Every pair of models that take the same input (up to a layout permutation) and have the same number of "
            "classes is compared sample by sample. Name the pairs with --reference MODEL or --group A,B.",
    "reference": "Every model is compared with the reference {reference}, sample by sample.",
    "groups": "Every pair within each named group is compared sample by sample: {groups}.",
    "none": "Agreement was not checked (--no-check).",
}


def build_comparison_view(
    document: dict[str, Any], pictures: dict[int, Picture] | None = None, pictures_note: str = ""
) -> ComparisonView:
    """The comparison report's view from its JSON document: the templates only display it.

    ``pictures`` are the drawn inputs of the samples the pairs disagree on most (by sample index);
    ``pictures_note`` says how they are drawn, or why they are not.
    """
    audited = [m for m in document["models"] if m["status"] == "audited"]
    failed = [m for m in document["models"] if m["status"] != "audited"]
    rows = [
        StripRow(
            m["label"],
            [s["lambda_max"] for s in m["audit"]["samples"]],
            m["summary"]["median"],
            bound_value(m["bound"]),
        )
        for m in audited
    ]
    columns = ["Model", "Producer", "SHA-256", "Parameters", "Family", "Gradients, method", "Layout", "Samples",
               "Median", "p95", "Max", "Bound", "Verdict"]
    model_rows = []
    for m in audited:
        summary, verdict, facts = m["summary"], m["audit"]["verdict"], m["facts"]
        layout = m["layout"]["name"] if m["layout"] else "as the data"
        model_rows.append(
            [
                m["label"],
                m["producer"] or "—",
                m["sha256"][:12],
                fmt(facts["parameter_count"]),
                facts["family"],
                f"{facts['gradients']}, {facts['method']}" + (f" ({m['note']})" if m["note"] else ""),
                layout,
                str(summary["count"]),
                fmt(summary["median"]),
                fmt(summary["p95"]),
                fmt(summary["max"]),
                fmt(bound_value(m["bound"])) if m["bound"] else "not computed",
                VERDICT_HEADLINES[verdict["status"]].lower(),
            ]
        )
    failures = (
        Table("Models that could not be audited", ["Model", "Error"], [[m["label"], m["error"]] for m in failed])
        if failed
        else None
    )
    rank = document["ranking"]
    ranking_table = Table(
        f"Ranking by measured {rank['statistic']} lambda_max (1 = least sensitive)",
        ["Rank", "Model", rank["statistic"]],
        [[str(r["rank"]), r["model"], fmt(r["value"])] for r in rank["by_measured"]],
    )
    bound_table = None
    if rank["by_bound"] is not None:
        bound_table = Table("Ranking by analytic bound", ["Rank", "Model", "Bound"],
                            [[str(r["rank"]), r["model"], fmt(r["value"])] for r in rank["by_bound"]])
        tau = rank["kendall_tau"]
        bound_note = (
            f"Kendall's tau between the two rankings: {fmt(tau, 3)} "
            "(1: the bounds order the models exactly as measured)."
        )
    else:
        bound_note = "Ranking by analytic bound: not computed (no bound for " + ", ".join(rank["bound_missing"]) + ")."
    agreement = document["agreement"]
    data = document["data"]
    source = "synthetic N(0, 1) samples" if data.get("synthetic") else data["source"]
    method = document["method"]
    setup = [
        Row("Data", f"{source}: {data['count']} samples of shape {shape_text(data.get('sample_shape'))}"),
        Row("Method", f"{method['estimator']}, gradients {method['gradients']}, seed {method['seed']}"),
        Row("Models", f"{len(audited)} audited" + (f", {len(failed)} failed" if failed else "")),
    ]
    consistency = document["consistency"]
    note = _MODE_NOTES[agreement["mode"]].format(reference=agreement["reference"],
                                                  groups="; ".join(", ".join(g) for g in agreement["groups"]))
    return ComparisonView(
        title="fimaudit comparison: " + ", ".join(m["label"] for m in document["models"]),
        created_at=document["created_at"],
        tool_version=document["tool"]["version"],
        status=consistency["status"],
        headline=HEADLINES[consistency["status"]],
        reason=consistency["reason"],
        setup=setup,
        chart=strip_chart(rows),
        models=Table("", columns, model_rows),
        failures=failures,
        ranking=ranking_table,
        bound_ranking=bound_table,
        bound_note=bound_note,
        pairs_table=_pairs_table(agreement["pairs"]),
        pairs=[_pair_view(pair, pictures or {}) for pair in agreement["pairs"]],
        pictures_note=pictures_note,
        agreement_note=note,
        environment=[Row(key, str(value)) for key, value in document["environment"].items()],
        attack_rankings=attack_ranking_tables(rank),
    )
