"""The prepared view of a report: every number formatted and every chart laid out in Python.

Templates only place what is here (they do no arithmetic), so what a reviewer reads is exactly
what the JSON says, formatted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def fmt(value: float | None, digits: int = 4) -> str:
    """A number as a reviewer reads it: 4 significant digits, '—' for missing."""
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int


@dataclass
class Histogram:
    """An SVG histogram laid out in a width x height box."""

    width: int
    height: int
    bars: list[Bar]
    axis_labels: list[tuple[float, str]]
    title: str


def histogram(values: list[float], title: str, bins: int = 20, width: int = 560, height: int = 180) -> Histogram:
    """Bin ``values`` on a log10 axis when they span decades (lambda_max usually does)."""
    data = np.asarray(values, dtype=np.float64)
    positive = data[data > 0]
    use_log = positive.size == data.size and data.size > 0 and positive.max() / positive.min() > 100
    transformed = np.log10(positive) if use_log else data
    if transformed.size == 0:
        return Histogram(width, height, [], [], title)
    low, high = float(transformed.min()), float(transformed.max())
    if high == low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(transformed, bins=bins, range=(low, high))
    plot_height = height - 30
    bar_width = width / bins
    tallest = max(int(counts.max()), 1)
    bars = []
    for i, count in enumerate(counts):
        left, right = edges[i], edges[i + 1]
        label_left = 10**left if use_log else left
        label_right = 10**right if use_log else right
        bar_height = plot_height * int(count) / tallest
        bars.append(
            Bar(
                x=round(i * bar_width, 2),
                y=round(plot_height - bar_height, 2),
                width=round(bar_width - 1, 2),
                height=round(bar_height, 2),
                label=f"{fmt(label_left, 3)} – {fmt(label_right, 3)}: {int(count)}",
                count=int(count),
            )
        )
    ticks = [0, bins // 2, bins]
    axis = [(round(t * bar_width, 2), fmt(10 ** edges[t] if use_log else edges[t], 3)) for t in ticks]
    scale = " (log scale)" if use_log else ""
    return Histogram(width, height, bars, axis, title + scale)


def build_view(document: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """Everything the HTML template shows, from the JSON document."""
    samples = document["samples"]
    ranked = sorted(samples, key=lambda s: s["lambda_max"], reverse=True)[:top]
    verdict = document["verdict"]
    if verdict["threshold"] is None:
        status = "no threshold"
    else:
        status = "pass" if verdict["passed"] else "fail"
    summary = document["summary"]
    return {
        "title": f"fimaudit report: {document['model']['path']}",
        "status": status,
        "verdict_reason": verdict["reason"],
        "model": document["model"],
        "method": document["method"],
        "data": document["data"],
        "environment": document["environment"],
        "architecture_family": document["architecture"].get("family", "unknown"),
        "created_at": document["created_at"],
        "summary_rows": [(key, fmt(summary[key])) for key in ("count", "min", "median", "mean", "p95", "max")],
        "histogram": histogram([s["lambda_max"] for s in samples], "Distribution of lambda_max over samples"),
        "top_samples": [
            {
                "index": s["index"],
                "lambda_max": fmt(s["lambda_max"]),
                "kind": s["kind"],
                "interval": "—" if s["interval"] is None else f"[{fmt(s['interval'][0])}, {fmt(s['interval'][1])}]",
                "predicted_class": s["predicted_class"],
                "top_prob": fmt(s["top_prob"], 6),
                "trace": fmt(s["trace"]),
            }
            for s in ranked
        ],
        "bound": None if document["bound"] is None else fmt(document["bound"]["value"]),
    }
