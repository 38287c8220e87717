"""The report's per-sample bound is the local certificate where one is tighter, with its set stated (issue 10)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fimaudit.cli import main
from fimaudit.report.formatting import MISSING, fmt
from fimaudit.report.sample_bound import bound_cell, tightest_bound
from fimaudit.report.view import top_samples_table
from tests.certify.models import SAMPLES


def _certificate(eps: float, value: float) -> dict[str, object]:
    return {"epsilon": eps, "norm": "2", "value": value, "kind": "certified_upper_bound"}


def test_the_smallest_bound_wins_whatever_its_radius() -> None:
    sample = {"bound": {"value": 30.0}, "certificates": [_certificate(1e-4, 5.0), _certificate(1e-3, 4.0)]}
    assert tightest_bound(sample) == (4.0, f"certified over the l2 ball of radius {fmt(1e-3)}")
    looser = {"bound": {"value": 3.0}, "certificates": [_certificate(1e-4, 5.0)]}
    assert tightest_bound(looser) == (3.0, "analytic, at x")
    assert bound_cell({"bound": {"value": None, "reason": "no rule"}, "certificates": []}) == MISSING
    assert bound_cell({"bound": None, "certificates": [_certificate(0.0, 2.0)]}).startswith(fmt(2.0))


def test_report_table_shows_the_certificate_beside_the_analytic_bound(tmp_path) -> None:
    out, html = tmp_path / "audit.json", tmp_path / "report.html"
    result = CliRunner().invoke(main, ["audit", str(SAMPLES / "mlp.onnx"), "--data", str(SAMPLES / "digits_test.npy"),
                                       "--samples", "3", "--certify", "0.0001,0.001", "--json", str(out),
                                       "--report", str(html)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    table = top_samples_table(document)
    assert table.columns[-1] == "Bound (tightest, and its set)"
    by_index = {s["index"]: s for s in document["samples"]}
    for row in table.rows:
        sample = by_index[int(row[0])]
        analytic = sample["bound"]["value"]
        best = min(c["value"] for c in sample["certificates"])
        assert best < analytic  # the MLP's analytic bound is loose: the certificate must replace it
        assert row[-1].startswith(fmt(best) + " (certified over the l2 ball of radius "), row[-1]
        assert row[-1] in html.read_text()
