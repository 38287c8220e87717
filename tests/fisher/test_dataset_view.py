"""The dataset view: statistics, per-class breakdown and most sensitive samples, JSON-ready."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from fimaudit.fisher.dataset_view import dataset_view
from fimaudit.fisher.result import SpectralResult


@dataclass
class Audited:
    index: int
    result: SpectralResult
    top_prob: float
    predicted_class: int


def audited(index: int, value: float, label: int, kind: str = "exact") -> Audited:
    interval = (value * 0.8, value * 1.2) if kind == "estimate" else None
    result = SpectralResult(value=value, kind=kind, interval=interval, model_evaluations=10, seconds=0.5)
    return Audited(index, result, 0.9, label)


def test_view_of_a_small_audit() -> None:
    samples = [audited(0, 1.0, 3), audited(1, 5.0, 3), audited(2, 2.0, 1, "estimate"), audited(3, 5.0, 7), audited(4, 0.5, 1)]
    view = dataset_view(samples, top=3)
    json.dumps(view)  # plain data only
    summary = view["summary"]
    assert summary["count"] == 5
    assert summary["max"] == 5.0 and summary["min"] == 0.5
    assert summary["median"] == 2.0
    assert summary["kinds"] == {"estimate": 1, "exact": 4}
    assert summary["with_interval"] == 1
    assert summary["model_evaluations"] == 50
    assert summary["seconds"] == pytest.approx(2.5)
    assert view["per_class"] == [
        {"class": 1, "count": 2, "median": 1.25, "max": 2.0, "mean": 1.25},
        {"class": 3, "count": 2, "median": 3.0, "max": 5.0, "mean": 3.0},
        {"class": 7, "count": 1, "median": 5.0, "max": 5.0, "mean": 5.0},
    ]
    # Largest first; ties broken by sample index.
    assert [entry["index"] for entry in view["most_sensitive"]] == [1, 3, 2]
    assert view["most_sensitive"][2]["interval"] == [pytest.approx(1.6), pytest.approx(2.4)]
    assert view["most_sensitive"][0]["predicted_class"] == 3


def test_view_of_nothing() -> None:
    view = dataset_view([])
    assert view["summary"]["count"] == 0 and view["summary"]["max"] is None
    assert view["per_class"] == [] and view["most_sensitive"] == []


def test_the_audit_document_carries_the_view() -> None:
    from fimaudit.audit import AuditConfig, run_audit
    from fimaudit.report.document import build_document
    from tests.conftest import SAMPLES

    result = run_audit(
        AuditConfig(model_path=str(SAMPLES / "mlp.onnx"), data_path=str(SAMPLES / "digits_test.npy"), samples=6, method="blackbox", budget=40)
    )
    document = build_document(result)
    view = document["dataset"]
    values = [s["lambda_max"] for s in document["samples"]]
    assert view["summary"]["count"] == 6
    assert view["summary"]["max"] == pytest.approx(max(values))
    assert view["summary"]["kinds"] == {"estimate": 6}
    assert sum(entry["count"] for entry in view["per_class"]) == 6
    assert view["most_sensitive"][0]["lambda_max"] == pytest.approx(max(values))
    assert all(s["interval"][0] <= s["lambda_max"] <= s["interval"][1] for s in document["samples"])
    assert sum(s["model_evaluations"] for s in document["samples"]) == 6 * 40
    assert document["method"]["model_evaluations"] >= 6 * 40 + 6  # plus the logits of each sample
