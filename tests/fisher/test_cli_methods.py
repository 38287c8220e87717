"""``fimaudit audit --method ...`` end to end: every registered method runs and labels its values."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fimaudit.cli import main
from fimaudit.fisher.registry import estimator_names
from tests.conftest import SAMPLES

KINDS = {"exact": {"exact"}, "auto": {"exact"}, "lanczos": {"estimate", "lower_bound"}, "power": {"estimate", "lower_bound"},
         "hutchinson": {"lower_bound"}, "blackbox": {"estimate"}}


def audit(tmp_path, *options: str):
    out = tmp_path / "audit.json"
    arguments = ["audit", str(SAMPLES / "mlp.onnx"), "--data", str(SAMPLES / "digits_test.npy"), "--samples", "3", "--json", str(out), *options]
    return CliRunner().invoke(main, arguments), out


def test_every_registered_method_is_offered_and_tested() -> None:
    assert set(estimator_names()) == set(KINDS)


@pytest.mark.parametrize("method", sorted(KINDS))
def test_method_runs_and_says_what_its_values_are(tmp_path, method: str) -> None:
    outcome, out = audit(tmp_path, "--method", method, "--seed", "3")
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(out.read_text())
    assert document["method"]["estimator"] == method
    for sample in document["samples"]:
        assert sample["kind"] in KINDS[method]
        if sample["kind"] == "estimate":
            assert sample["interval"] is not None and sample["interval"][0] <= sample["lambda_max"] <= sample["interval"][1]
        else:
            assert sample["interval"] is None
    assert document["dataset"]["summary"]["count"] == 3


def test_too_small_a_budget_is_a_usage_error(tmp_path) -> None:
    outcome, out = audit(tmp_path, "--method", "blackbox", "--budget", "8")
    assert outcome.exit_code == 2
    assert "too small" in outcome.output and "blackbox" in outcome.output
    assert not out.exists()
