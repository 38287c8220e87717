"""The audit command's report options: --summary, and exit codes of the three-way verdict."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import fimaudit.audit
from fimaudit.cli import main
from fimaudit.fisher.exact_estimator import exact
from fimaudit.fisher.result import SpectralResult
from tests.report.helpers import DIGITS, MLP


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_summary_is_one_markdown_paragraph_matching_the_json(tmp_path) -> None:
    summary, out = tmp_path / "s.md", tmp_path / "a.json"
    result = invoke("audit", MLP, "--data", DIGITS, "--samples", "5", "--gradients", "fd",
                    "--fail-above", "1000", "--summary", str(summary), "--json", str(out))
    assert result.exit_code == 0, result.output
    text = summary.read_text()
    document = json.loads(out.read_text())
    assert text.startswith("**fimaudit: PASS** for `mlp.onnx`")
    assert "\n\n" not in text and text.count("\n") == 1
    assert f"max {document['summary']['max']:.4g}" in text
    assert document["verdict"]["reason"] in text
    assert "gradient check not applicable" in text


def test_summary_path_is_checked_before_the_audit(tmp_path) -> None:
    result = invoke("audit", MLP, "--data", DIGITS, "--samples", "2", "--summary", str(tmp_path / "missing" / "s.md"))
    assert result.exit_code == 2 and "does not exist" in result.output


def _interval_estimator(problem, budget, rng) -> SpectralResult:
    """The exact value, reported as an estimate with a +-50% interval (to exercise the verdict)."""
    value = exact(problem, budget, rng).value
    return SpectralResult(value=value, kind="estimate", interval=(0.5 * value, 1.5 * value), confidence=0.95)


@pytest.fixture
def interval_estimates(monkeypatch):
    monkeypatch.setattr(fimaudit.audit, "get_estimator", lambda name: _interval_estimator)


def test_inconclusive_audit_exits_one_and_says_so(tmp_path, interval_estimates) -> None:
    out, summary = tmp_path / "a.json", tmp_path / "s.md"
    probe = invoke("audit", MLP, "--data", DIGITS, "--samples", "4", "--json", str(out))
    maximum = json.loads(out.read_text())["summary"]["max"]
    result = invoke("audit", MLP, "--data", DIGITS, "--samples", "4", "--fail-above", str(maximum),
                    "--json", str(out), "--summary", str(summary))
    assert probe.exit_code == 0 and result.exit_code == 1, result.output
    verdict = json.loads(out.read_text())["verdict"]
    assert verdict["status"] == "inconclusive" and verdict["passed"] is False
    assert verdict["interval"] == pytest.approx([0.5 * maximum, 1.5 * maximum])
    assert "INCONCLUSIVE" in result.output
    assert summary.read_text().startswith("**fimaudit: INCONCLUSIVE**")
    cleared = invoke("audit", MLP, "--data", DIGITS, "--samples", "4", "--fail-above", str(2 * maximum))
    assert cleared.exit_code == 0, cleared.output
