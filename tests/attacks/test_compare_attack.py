"""compare --attack: the models ranked by attack success at each radius beside their lambda_max ranking."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fimaudit.cli import main
from fimaudit.report.compare_report import attack_ranking
from tests.conftest import SAMPLES


def summary(rates: list[float], radii: tuple[float, ...] = (0.1, 0.3), status: str = "run") -> dict:
    rows = [{"eps": eps, "success_rate": rate} for eps, rate in zip(radii, rates, strict=True)]
    return {"status": status, "norm": "inf", "success_rate_by_eps": rows}


def document(median: float, attack: dict | None) -> dict:
    return {"summary": {"median": median}, "attack_summary": attack}


def test_attack_ranking_orders_by_success_and_measures_agreement() -> None:
    labelled = [("a", document(1.0, summary([0.2, 0.5]))), ("b", document(5.0, summary([0.6, 0.9]))),
                ("c", document(3.0, summary([0.1, 1.0])))]
    entries = attack_ranking(labelled, "median")
    assert entries is not None and [e["eps"] for e in entries] == [0.1, 0.3]
    assert [m["model"] for m in entries[0]["models"]] == ["c", "a", "b"]
    # eps 0.1: lambda orders a < c < b, success c < a < b: one discordant pair of three -> tau 1/3.
    assert entries[0]["kendall_tau"] == 1 / 3
    assert entries[1]["kendall_tau"] == 1 / 3  # a < b < c by success; a < c < b by lambda_max
    assert attack_ranking([*labelled[:2], ("c", document(3.0, None))], "median") is None
    assert attack_ranking([*labelled[:2], ("c", document(3.0, summary([0.1], (0.2,))))], "median") is None


def test_compare_attack_ranks_models_beside_lambda_max(tmp_path) -> None:
    out, report = tmp_path / "c.json", tmp_path / "c.html"
    result = CliRunner().invoke(main, [
        "compare", str(SAMPLES / "mlp.onnx"), str(SAMPLES / "binary_sigmoid.onnx"), "--data",
        str(SAMPLES / "digits_test.npy"), "--samples", "2", "--no-bounds", "--no-check", "--attack", "--norm", "inf",
        "--attack-eps", "0.05,0.3", "--input-range", "0,1", "--json", str(out), "--report", str(report),
    ])
    assert result.exit_code == 0, result.output
    entries = json.loads(out.read_text())["ranking"]["by_attack"]
    assert [e["eps"] for e in entries] == [0.05, 0.3]
    for entry in entries:
        rates = [m["success_rate"] for m in entry["models"]]
        assert rates == sorted(rates) and len(rates) == 2
    assert "attack success at linf eps 0.3" in result.output
    assert "Ranking by attack success at linf eps 0.3" in report.read_text()
