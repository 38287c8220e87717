"""fimaudit/compare.py: rankings by bound and by measurement, and their agreement."""

from __future__ import annotations

import pytest

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.compare import agreement, rank_models
from fimaudit.errors import InputError
from fimaudit.report.document import build_document
from tests.conftest import SAMPLES


def doc(path: str, median: float, bound: float | None, per_sample: float | None = None, family: str = "mlp") -> dict:
    return {
        "model": {"path": path},
        "summary": {"median": median, "mean": median, "p95": median, "max": median},
        "bound": {"value": bound, "kind": "upper_bound", "per_sample": {"median": per_sample}},
        "architecture": {"family": family},
        "data": {"source": "d.npy", "count": 4},
    }


def test_identical_orders_agree_perfectly() -> None:
    result = rank_models([doc("a", 1.0, 10.0, 2.0), doc("b", 3.0, 30.0, 5.0), doc("c", 2.0, 20.0, 3.0), doc("d", 4.0, 50.0, 9.0)])
    assert result["by_measured"] == ["a", "c", "b", "d"]
    assert result["by_bound_global"] == ["a", "c", "b", "d"]
    for kind in ("global", "per_sample_median"):
        entry = result["agreement"][kind]
        assert entry["identical_order"] and entry["spearman"] == pytest.approx(1.0) and entry["kendall"] == pytest.approx(1.0)
        assert entry["discordant_pairs"] == 0 and entry["concordant_pairs"] == 6
        assert entry["kendall_p"] is not None
    assert result["models"][0]["tightness"] == pytest.approx(10.0)


def test_reversed_order_and_missing_bounds() -> None:
    result = rank_models([doc("a", 1.0, 30.0), doc("b", 2.0, 20.0), doc("c", 3.0, 10.0), doc("x", 0.5, None)])
    entry = result["agreement"]["global"]
    assert entry["spearman"] == pytest.approx(-1.0) and entry["kendall"] == pytest.approx(-1.0)
    assert entry["spearman_p"] is None, "three models: no p-value"
    assert result["without_bound"]["global"] == ["x"]
    assert "rank_global" not in result["models"][3]
    assert result["by_measured"][0] == "x"
    assert result["agreement"]["per_sample_median"] is None


def test_ties_share_a_rank_and_small_inputs_are_refused() -> None:
    result = rank_models([doc("a", 1.0, 5.0), doc("b", 1.0, 7.0)], labels=["A", "B"])
    assert [m["rank_measured"] for m in result["models"]] == [1, 1]
    assert result["agreement"]["global"]["spearman"] is None
    with pytest.raises(InputError):
        rank_models([doc("a", 1.0, 5.0)])
    with pytest.raises(InputError):
        rank_models([doc("a", 1.0, 5.0), doc("b", 2.0, 3.0)], statistic="mode")
    assert agreement([1.0, 2.0], [2.0, 1.0])["discordant_pairs"] == 1


def test_rank_sample_models_from_real_audits() -> None:
    documents = []
    for name in ("mlp.onnx", "vgg_small.onnx", "resnet_small.onnx"):
        config = AuditConfig(model_path=str(SAMPLES / name), data_path=str(SAMPLES / "digits_test.npy"), samples=4, method="exact", gradients="fd")
        documents.append(build_document(run_audit(config)))
    result = rank_models(documents, labels=["mlp", "vgg", "resnet"])
    assert result["same_data"]
    assert sorted(result["by_measured"]) == ["mlp", "resnet", "vgg"]
    assert sorted(result["by_bound_global"]) == ["mlp", "resnet", "vgg"]
    assert all(m["tightness"] >= 1.0 for m in result["models"])
    assert result["agreement"]["global"]["models"] == 3
