"""The comparison document (JSON) and view (HTML) of ``fimaudit compare``.

Besides distributions and rankings, a comparison answers one question exactly: do models that
are the same network, exported differently, land on the same numbers? Models are taken to be the
same network when they share a *network signature*: parameter count, input sample shape, number
of classes and architecture family. Within such a group every pair is compared sample by sample;
they agree when every per-sample lambda_max matches within ``rtol`` (relative) and every
prediction is the same class. A fused BatchNorm changes the parameter count, so such exports are
not grouped: the report lists the groups it checked, and nothing else is claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from fimaudit.compare_audit import Comparison
from fimaudit.report.charts import Chart, StripRow, strip_chart
from fimaudit.report.document import SCHEMA_VERSION, build_document
from fimaudit.report.formatting import file_name, fmt, shape_text
from fimaudit.report.view import VERDICT_HEADLINES, Row, Table, bound_value
from fimaudit.statistics import STATISTICS

#: Default relative tolerance for "the same numbers": finite differences in float32 are good to
#: about 1e-4 relative, and exporters may reorder float32 arithmetic.
DEFAULT_RTOL = 1e-2


def network_signature(document: dict[str, Any]) -> dict[str, Any]:
    """What two exports of the same network share, whatever the exporter did to the graph."""
    model = document["model"]
    return {
        "parameter_count": model.get("parameter_count"),
        "sample_shape": list(document["data"].get("sample_shape", [])),
        "num_classes": model["output"].get("num_classes"),
        "family": (document.get("architecture") or {}).get("family", "unknown"),
    }


def _labels(paths: list[str]) -> list[str]:
    """File names, or full paths where two models share a file name."""
    names = [file_name(path) for path in paths]
    return [path if names.count(name) > 1 else name for path, name in zip(paths, names)]


def pair_agreement(a: dict[str, Any], b: dict[str, Any], rtol: float) -> dict[str, Any]:
    """Sample-by-sample agreement of two audits of the same data."""
    left = {s["index"]: s for s in a["samples"]}
    right = {s["index"]: s for s in b["samples"]}
    common = sorted(set(left) & set(right))
    x = np.array([left[i]["lambda_max"] for i in common], dtype=np.float64)
    y = np.array([right[i]["lambda_max"] for i in common], dtype=np.float64)
    # Values far below the largest are compared on the scale of the largest (no 0/0 blow-up).
    floor = 1e-9 * max(float(np.abs(x).max(initial=0.0)), float(np.abs(y).max(initial=0.0)), 1e-300)
    relative = np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), floor)
    worst = int(np.argmax(relative)) if relative.size else 0
    same_class = sum(1 for i in common if left[i]["predicted_class"] == right[i]["predicted_class"])
    max_relative = float(relative.max()) if relative.size else 0.0
    return {
        "samples": len(common),
        "max_relative_difference": max_relative,
        "median_relative_difference": float(np.median(relative)) if relative.size else 0.0,
        "worst_sample": common[worst] if common else None,
        "same_predicted_class": same_class,
        "agree": bool(common) and max_relative <= rtol and same_class == len(common),
    }


def agreement_groups(labelled: list[tuple[str, dict[str, Any]]], rtol: float) -> list[dict[str, Any]]:
    """Groups of two or more models with one network signature, and whether each pair agrees."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    signatures: dict[str, dict[str, Any]] = {}
    for label, document in labelled:
        signature = network_signature(document)
        key = repr(sorted(signature.items()))
        groups.setdefault(key, []).append((label, document))
        signatures[key] = signature
    result = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        pairs = []
        for (label_a, doc_a), (label_b, doc_b) in combinations(members, 2):
            pairs.append({"a": label_a, "b": label_b, **pair_agreement(doc_a, doc_b, rtol)})
        result.append({
            "signature": signatures[key],
            "models": [label for label, _ in members],
            "pairs": pairs,
            "agree": all(pair["agree"] for pair in pairs),
            "rtol": rtol,
        })
    return result


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
    by_measured = [{"rank": r + 1, "model": label, "value": doc["summary"][statistic]} for r, (label, doc) in enumerate(measured)]
    bounds = {label: bound_value(doc.get("bound")) for label, doc in labelled}
    missing = [label for label, value in bounds.items() if value is None]
    entry: dict[str, Any] = {"statistic": statistic, "by_measured": by_measured, "by_bound": None,
                             "bound_missing": missing, "kendall_tau": None}
    if not missing:
        ordered = sorted(labelled, key=lambda item: bounds[item[0]])
        entry["by_bound"] = [{"rank": r + 1, "model": label, "value": bounds[label]} for r, (label, _) in enumerate(ordered)]
        entry["kendall_tau"] = _kendall_tau([doc["summary"][statistic] for _, doc in labelled],
                                            [bounds[label] for label, _ in labelled])
    return entry


def consistency(groups: list[dict[str, Any]], failures: list[str]) -> dict[str, Any]:
    """One-sentence outcome of the comparison (exit 1 when not ``consistent``)."""
    disagreeing = [group for group in groups if not group["agree"]]
    if disagreeing:
        names = "; ".join(", ".join(group["models"]) for group in disagreeing)
        reason = f"models of the same network do not land on the same numbers: {names}"
    elif groups:
        names = "; ".join(", ".join(group["models"]) for group in groups)
        reason = f"models of the same network land on the same numbers ({names})"
    else:
        reason = "no two models share a network signature, so no cross-exporter agreement was checked"
    if failures:
        reason += f"; {len(failures)} model(s) could not be audited: {', '.join(failures)}"
    return {"consistent": not disagreeing and not failures, "reason": reason}


def build_comparison_document(comparison: Comparison, rtol: float = DEFAULT_RTOL, statistic: str = "median") -> dict[str, Any]:
    """The comparison as JSON-ready data; each model's full audit document is kept under ``audit``."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown ranking statistic {statistic!r}")
    labels = _labels([outcome.path for outcome in comparison.outcomes])
    models, labelled, failures = [], [], []
    for label, outcome in zip(labels, comparison.outcomes):
        if outcome.result is None:
            models.append({"label": label, "path": outcome.path, "status": "error", "error": outcome.error, "audit": None})
            failures.append(label)
            continue
        document = build_document(outcome.result)
        labelled.append((label, document))
        models.append({
            "label": label,
            "path": outcome.path,
            "status": "audited",
            "error": None,
            "sha256": document["model"]["sha256"],
            "producer": document["model"]["producer"],
            "network_signature": network_signature(document),
            "summary": document["summary"],
            "bound": document["bound"],
            "audit": document,
        })
    first = labelled[0][1]
    config = comparison.config
    groups = agreement_groups(labelled, rtol)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "comparison",
        "tool": first["tool"],
        "created_at": comparison.started_at,
        "environment": first["environment"],
        "data": {key: first["data"][key] for key in ("source", "synthetic", "count", "sample_shape") if key in first["data"]},
        "method": {"estimator": config.method, "gradients": config.gradients, "seed": config.seed, "budget": config.budget},
        "models": models,
        "ranking": ranking(labelled, statistic),
        "agreement": groups,
        "consistency": consistency(groups, failures),
    }


# ----------------------------------------------------------------------------------------------
# The view of the comparison report (templates/compare.html.j2)


@dataclass
class AgreementView:
    title: str
    agree: bool
    label: str
    table: Table


@dataclass
class ComparisonView:
    title: str
    created_at: str
    tool_version: str
    consistent: bool
    headline: str
    reason: str
    setup: list[Row]
    chart: Chart
    models: Table
    failures: Table | None
    ranking: Table
    bound_ranking: Table | None
    bound_note: str
    agreement: list[AgreementView]
    agreement_note: str
    environment: list[Row]


def _signature_text(signature: dict[str, Any]) -> str:
    return (f"{fmt(signature['parameter_count'])} parameters, samples {shape_text(signature['sample_shape'])}, "
            f"{signature['num_classes']} classes, family {signature['family']}")


def build_comparison_view(document: dict[str, Any]) -> ComparisonView:
    audited = [m for m in document["models"] if m["status"] == "audited"]
    failed = [m for m in document["models"] if m["status"] != "audited"]
    rows = [StripRow(m["label"], [s["lambda_max"] for s in m["audit"]["samples"]], m["summary"]["median"], bound_value(m["bound"]))
            for m in audited]
    columns = ["Model", "Producer", "SHA-256", "Samples", "Median", "p95", "Max", "Bound", "Verdict"]
    model_rows = []
    for m in audited:
        summary, verdict = m["summary"], m["audit"]["verdict"]
        model_rows.append([m["label"], m["producer"] or "—", m["sha256"][:12], str(summary["count"]),
                           fmt(summary["median"]), fmt(summary["p95"]), fmt(summary["max"]),
                           fmt(bound_value(m["bound"])) if m["bound"] else "not computed",
                           VERDICT_HEADLINES[verdict["status"]].lower()])
    failures = Table("Models that could not be audited", ["Model", "Error"], [[m["label"], m["error"]] for m in failed]) if failed else None
    rank = document["ranking"]
    ranking_table = Table(f"Ranking by measured {rank['statistic']} lambda_max (1 = least sensitive)", ["Rank", "Model", rank["statistic"]],
                          [[str(r["rank"]), r["model"], fmt(r["value"])] for r in rank["by_measured"]])
    bound_table = None
    if rank["by_bound"] is not None:
        bound_table = Table("Ranking by analytic bound", ["Rank", "Model", "Bound"],
                            [[str(r["rank"]), r["model"], fmt(r["value"])] for r in rank["by_bound"]])
        tau = rank["kendall_tau"]
        bound_note = f"Kendall's tau between the two rankings: {fmt(tau, 3)} (1: the bounds order the models exactly as measured)."
    else:
        bound_note = "Ranking by analytic bound: not computed (no bound for " + ", ".join(rank["bound_missing"]) + ")."
    agreement = []
    for group in document["agreement"]:
        table = Table("", ["Model A", "Model B", "Max relative difference", "Median relative difference", "Worst sample", "Same predicted class", "Agree"],
                      [[p["a"], p["b"], fmt(p["max_relative_difference"], 3), fmt(p["median_relative_difference"], 3),
                        str(p["worst_sample"]), f"{p['same_predicted_class']} of {p['samples']}", "yes" if p["agree"] else "NO"]
                       for p in group["pairs"]])
        verdict_text = "the same numbers" if group["agree"] else "DIFFERENT numbers"
        agreement.append(AgreementView(f"{', '.join(group['models'])} ({_signature_text(group['signature'])})",
                                       group["agree"], f"{verdict_text} (tolerance {fmt(group['rtol'], 3)} relative)", table))
    data = document["data"]
    source = "synthetic N(0, 1) samples" if data.get("synthetic") else data["source"]
    method = document["method"]
    setup = [
        Row("Data", f"{source}: {data['count']} samples of shape {shape_text(data.get('sample_shape'))}"),
        Row("Method", f"{method['estimator']}, gradients {method['gradients']}, seed {method['seed']}"),
        Row("Models", f"{len(audited)} audited" + (f", {len(failed)} failed" if failed else "")),
    ]
    consistent = document["consistency"]["consistent"]
    return ComparisonView(
        title="fimaudit comparison: " + ", ".join(m["label"] for m in document["models"]),
        created_at=document["created_at"],
        tool_version=document["tool"]["version"],
        consistent=consistent,
        headline="CONSISTENT" if consistent else "INCONSISTENT",
        reason=document["consistency"]["reason"],
        setup=setup,
        chart=strip_chart(rows),
        models=Table("", columns, model_rows),
        failures=failures,
        ranking=ranking_table,
        bound_ranking=bound_table,
        bound_note=bound_note,
        agreement=agreement,
        agreement_note=("Models are grouped as the same network when they share parameter count, input sample shape, "
                        "number of classes and architecture family; within a group every pair is compared sample by sample."),
        environment=[Row(key, str(value)) for key, value in document["environment"].items()],
    )
