"""The dataset view of an audit: how lambda_max is spread over the samples, JSON-ready.

Per-sample numbers answer "how fragile is this input"; a model owner also asks which classes
are fragile and which inputs to look at first. Everything here is plain dicts, lists, floats and
ints, computed from the per-sample results only (no model calls). Values keep their kind: when
an estimator reports lower bounds, the statistics are statistics of lower bounds, and
``kinds`` says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from fimaudit.fisher.result import SpectralResult
from fimaudit.statistics import statistic, summary_dict

DEFAULT_TOP = 10


class AuditedSample(Protocol):
    """What the view needs of one audited sample (fimaudit.audit.SampleAudit has it)."""

    # Read-only members, so that frozen dataclasses (results.SampleResult) satisfy the protocol.
    @property
    def index(self) -> int:
        """The sample's position in the data."""
    @property
    def result(self) -> SpectralResult:
        """The estimator's result for the sample."""
    @property
    def top_prob(self) -> float:
        """The largest softmax probability."""
    @property
    def predicted_class(self) -> int:
        """The class with that probability."""


def _sample_entry(sample: AuditedSample) -> dict[str, Any]:
    result = sample.result
    return {
        "index": int(sample.index),
        "lambda_max": float(result.value),
        "kind": result.kind,
        "interval": [float(result.interval[0]), float(result.interval[1])] if result.interval is not None else None,
        "predicted_class": int(sample.predicted_class),
        "top_prob": float(sample.top_prob),
    }


def dataset_view(samples: Iterable[AuditedSample], top: int = DEFAULT_TOP) -> dict[str, Any]:
    """Summary statistics, a per-predicted-class breakdown, and the ``top`` most sensitive samples."""
    samples = list(samples)
    values = np.array([float(s.result.value) for s in samples], dtype=np.float64)
    summary: dict[str, Any] = summary_dict(values)
    summary["kinds"] = dict(sorted(Counter(s.result.kind for s in samples).items()))
    summary["with_interval"] = sum(1 for s in samples if s.result.interval is not None)
    summary["model_evaluations"] = int(sum(s.result.model_evaluations for s in samples))
    summary["seconds"] = float(sum(s.result.seconds for s in samples))

    per_class = []
    classes = np.array([int(s.predicted_class) for s in samples], dtype=np.int64)
    for label in sorted(set(classes.tolist())):
        chosen = values[classes == label]
        per_class.append(
            {
                "class": int(label),
                "count": int(chosen.size),
                "median": statistic(chosen, "median"),
                "max": statistic(chosen, "max"),
                "mean": statistic(chosen, "mean"),
            }
        )

    # Stable order: largest lambda_max first, ties by sample index.
    order = sorted(range(len(samples)), key=lambda i: (-values[i], samples[i].index))
    most_sensitive = [_sample_entry(samples[i]) for i in order[: max(0, top)]]
    return {"summary": summary, "per_class": per_class, "most_sensitive": most_sensitive}
