"""Rank models by their certified bound and by measured lambda_max, and say how well they agree.

This is the paper's theoretical ranking checked against measurement: the bound orders
architectures by what their weights allow in the worst case, the audit by what the data
actually shows. ``rank_models`` takes audit documents (report/document.py's JSON, one per
model, audited on the same data) and returns JSON-ready data for ``fimaudit compare``:
both rankings, Spearman's rho and Kendall's tau between them (with p-values from scipy when
there are enough models to mean anything), and the concordant / discordant pairs.

Rank 1 is the least sensitive model (smallest lambda_max, smallest bound). Models without a
bound (an op with no rule, or a global bound needing an input domain) are listed and left out
of the bound ranking, never given a made-up value.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Sequence

import numpy as np
from scipy import stats

from fimaudit.errors import InputError
from fimaudit.statistics import STATISTICS
BOUND_KINDS = ("global", "per_sample_median")
# Below this many models a rank correlation's p-value says nothing; it is reported as None.
MIN_MODELS_FOR_P_VALUE = 4


def _bound(document: dict[str, Any], kind: str) -> float | None:
    bound = document.get("bound") or {}
    if kind == "global":
        value = bound.get("value")
    else:
        value = (bound.get("per_sample") or {}).get("median")
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _ranks(values: Sequence[float]) -> list[int]:
    """1-based ranks, ties sharing the smallest rank (1 = least sensitive)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0] * len(values)
    for position, index in enumerate(order):
        if position and values[index] == values[order[position - 1]]:
            ranks[index] = ranks[order[position - 1]]
        else:
            ranks[index] = position + 1
    return ranks


def agreement(measured: Sequence[float], bounds: Sequence[float]) -> dict[str, Any]:
    """Spearman and Kendall agreement of two orderings of the same models."""
    n = len(measured)
    concordant = discordant = 0
    for i, j in combinations(range(n), 2):
        product = np.sign(measured[i] - measured[j]) * np.sign(bounds[i] - bounds[j])
        concordant += int(product > 0)
        discordant += int(product < 0)
    entry: dict[str, Any] = {
        "models": n,
        "concordant_pairs": concordant,
        "discordant_pairs": discordant,
        "identical_order": _ranks(measured) == _ranks(bounds),
        "spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None,
    }
    if n >= 2 and len(set(measured)) > 1 and len(set(bounds)) > 1:
        rho, rho_p = stats.spearmanr(measured, bounds)
        tau, tau_p = stats.kendalltau(measured, bounds)
        entry.update({"spearman": float(rho), "kendall": float(tau)})
        if n >= MIN_MODELS_FOR_P_VALUE:
            entry.update({"spearman_p": float(rho_p), "kendall_p": float(tau_p)})
    return entry


def _same_data(documents: Sequence[dict[str, Any]]) -> bool:
    keys = {(d.get("data", {}).get("source"), d.get("data", {}).get("count")) for d in documents}
    return len(keys) == 1


def rank_models(documents: Sequence[dict[str, Any]], labels: Sequence[str] | None = None,
                statistic: str = "median") -> dict[str, Any]:
    """Both rankings of the audited models and their agreement, JSON-ready.

    ``documents``: audit documents (``build_document``), one per model, on the same data.
    ``labels``: names to show (default: the model paths).
    """
    if statistic not in STATISTICS:
        raise InputError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    if len(documents) < 2:
        raise InputError("ranking needs at least two audited models")
    names = list(labels) if labels is not None else [d["model"]["path"] for d in documents]
    measured = [float(d["summary"][statistic]) for d in documents]
    models: list[dict[str, Any]] = []
    for name, document, value in zip(names, documents, measured):
        entry = {
            "model": name,
            "family": (document.get("architecture") or {}).get("family", "unknown"),
            "lambda_max": value,
        }
        for kind in BOUND_KINDS:
            entry[f"bound_{kind}"] = _bound(document, kind)
        global_bound = entry["bound_global"]
        entry["tightness"] = global_bound / value if global_bound is not None and value > 0 else None
        models.append(entry)
    for rank, entry in zip(_ranks(measured), models):
        entry["rank_measured"] = rank
    result: dict[str, Any] = {
        "statistic": statistic,
        "same_data": _same_data(documents),
        "by_measured": [m["model"] for m in sorted(models, key=lambda m: m["rank_measured"])],
        "models": models,
        "agreement": {},
        "without_bound": {},
    }
    for kind in BOUND_KINDS:
        present = [m for m in models if m[f"bound_{kind}"] is not None]
        result["without_bound"][kind] = [m["model"] for m in models if m[f"bound_{kind}"] is None]
        values = [m[f"bound_{kind}"] for m in present]
        for rank, entry in zip(_ranks(values), present):
            entry[f"rank_{kind}"] = rank
        result[f"by_bound_{kind}"] = [m["model"] for m in sorted(present, key=lambda m: m[f"rank_{kind}"])]
        result["agreement"][kind] = agreement([m["lambda_max"] for m in present], values) if len(present) >= 2 else None
    return result
