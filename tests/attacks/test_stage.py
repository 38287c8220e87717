"""The attack stage of an audit: ``audit --attack``, the JSON contract, saved examples, the robust gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fimaudit.attacks import Forward, InputRange, deepfool, perturbation_norm, pgd_at_radii
from fimaudit.attacks.stage import AttackConfig, adversarial_rows, not_run_reason, success_by_radius
from fimaudit.audit import RunnerSettings, intake, prepare_model
from fimaudit.cli import main
from fimaudit.errors import InputError
from fimaudit.gradients import make_source
from fimaudit.results import AttackResult, AttackSummary, PgdOutcome, RadiusSuccess, Verdict
from fimaudit.verdict import gate_robustness, robust_accuracy_check
from tests.conftest import SAMPLES

MLP, DIGITS = str(SAMPLES / "mlp.onnx"), str(SAMPLES / "digits_test.npy")
CONTRACT_SAMPLE = {"norm", "epsilon_min", "verified", "method", "evaluations", "adversarial_class"}
CONTRACT_SUMMARY = {"success_rate_by_eps", "spearman", "kendall", "intervals", "quadratic_radius"}


@pytest.fixture(scope="module")
def mlp():
    data = np.load(DIGITS)[:8]
    prepared = prepare_model(intake(MLP), RunnerSettings(), probe=data[:1])
    source = make_source("graph", prepared.runner, data.shape[1:], prepared.num_classes).source
    return prepared.runner, source, data


def audit(tmp_path, *options: str, samples: int = 4) -> tuple[int, dict, str]:
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(main, [
        "audit", MLP, "--data", DIGITS, "--samples", str(samples), "--no-bounds", "--json", str(out), *options,
    ])
    document = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, document, result.output


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_pgd_just_above_deepfools_epsilon_succeeds_on_the_mlp(mlp, norm) -> None:
    """PGD is at least as strong as DeepFool: a ball 5% larger than DeepFool's epsilon_min holds an example."""
    runner, source, data = mlp
    forward = Forward(runner, source.dtype, InputRange(0.0, 1.0))
    for index, x in enumerate(data):
        found = deepfool(source, forward, x, norm)
        assert found.epsilon_min is not None
        outcome = pgd_at_radii(source, forward, x, [1.05 * found.epsilon_min], norm, np.random.default_rng(index))
        assert outcome.success == (True,), (index, found.epsilon_min)
        assert outcome.smallest_norm is not None and outcome.smallest_norm <= 1.05 * found.epsilon_min


def test_audit_attack_writes_the_contract_and_reverifiable_examples(tmp_path, mlp) -> None:
    runner, _, data = mlp
    adv = tmp_path / "adv.npy"
    code, document, output = audit(
        tmp_path, "--attack", "--norm", "inf", "--attack-eps", "0.01,0.3", "--input-range", "0,1",
        "--save-adversarial", str(adv), "--report", str(tmp_path / "r.html"), "--summary", str(tmp_path / "s.md"),
    )
    assert code == 0, output
    assert "Attacks (linf): 4 of 4 samples have a verified adversarial example" in (tmp_path / "s.md").read_text()
    summary = document["attack_summary"]
    assert set(summary) >= CONTRACT_SUMMARY and summary["status"] == "run"
    assert [row["eps"] for row in summary["success_rate_by_eps"]] == [0.01, 0.3]
    assert summary["success_rate_by_eps"][1]["robust_accuracy"] == 0.0  # every digit falls within l-inf 0.3
    assert {entry["class"] for entry in summary["per_class"]} == {s["predicted_class"] for s in document["samples"]}
    rows = np.load(adv)
    assert rows.shape == (4, *data.shape[1:])
    for sample, row in zip(document["samples"], rows, strict=True):
        attack = sample["attack"]
        assert set(attack) >= CONTRACT_SAMPLE and attack["verified"]
        # Re-run: the saved row is of the adversarial class, at the reported distance, within the range.
        (logits,) = runner.run(row[None].astype(np.float32))
        assert int(np.argmax(logits[0])) == attack["adversarial_class"] != sample["predicted_class"]
        assert row.min() >= 0 and row.max() <= 1
        applied = perturbation_norm((row - data[sample["index"]])[None], "inf")[0]
        assert applied == pytest.approx(attack["epsilon_min"], rel=1e-6)
    html = (tmp_path / "r.html").read_text()
    assert 'id="attacks"' in html and "re-run by a plain forward pass" in html and "Robust accuracy (linf)" in html
    assert 'alt="adversarial example of sample' in html and "KL along the top eigenvector" in html
    checked = [s["attack"]["quadratic"] for s in document["samples"] if s["attack"]["quadratic"] is not None]
    assert checked and summary["quadratic_radius"]["checked"] == len(checked)
    assert [c["name"] for c in document["checks"]][-1] == "robust_accuracy"
    assert any("stronger attack may find closer ones" in note for note in document["limitations"])


def test_no_attack_section_without_attack(tmp_path) -> None:
    code, document, output = audit(tmp_path, "--report", str(tmp_path / "r.html"), samples=2)
    assert code == 0, output
    assert document["attack_summary"] is None and all(s["attack"] is None for s in document["samples"])
    assert 'id="attacks"' not in (tmp_path / "r.html").read_text()
    assert "robust_accuracy" not in [c["name"] for c in document["checks"]]


def test_rows_without_an_example_are_nan(tmp_path) -> None:
    """A budget spent before the first step: nothing verified, NaN rows, null epsilon, the reason said."""
    adv = tmp_path / "adv.npy"
    code, document, output = audit(tmp_path, "--attack", "--attack-budget", "1", "--save-adversarial", str(adv))
    assert code == 0, output
    assert np.isnan(np.load(adv)).all()
    for sample in document["samples"]:
        attack = sample["attack"]
        assert attack["verified"] is False and attack["epsilon_min"] is None and "budget" in attack["reason"]
    assert document["attack_summary"]["verified"] == 0 and document["attack_summary"]["spearman"] is None


def test_adversarial_rows_keep_examples_and_nan_elsewhere() -> None:
    from fimaudit.fisher.result import SpectralResult
    from fimaudit.results import SampleResult

    example = np.full((1, 2, 2), 0.5, dtype=np.float32)
    found = AttackResult("2", 0.1, True, "deepfool", 3, 1, 0, example=example)
    missing = AttackResult("2", None, False, "deepfool", 3, None, 0, reason="budget")
    spectral = SpectralResult(value=1.0, kind="exact")
    samples = [SampleResult(i, spectral, 0.9, 0, np.zeros(2), attack=a) for i, a in enumerate([found, missing])]
    rows = adversarial_rows(samples, np.zeros((2, 1, 2, 2), dtype=np.float32))
    assert np.array_equal(rows[0], example) and np.isnan(rows[1]).all()


@pytest.mark.parametrize("floor,code,status", [(0.9, 1, "failed"), (0.0, 0, "passed")])
def test_fail_robust_below_gates_the_audit(tmp_path, floor, code, status) -> None:
    exit_code, document, output = audit(
        tmp_path, "--attack", "--norm", "inf", "--attack-eps", "0.3", "--input-range", "0,1",
        "--fail-robust-below", str(floor), samples=2,
    )
    assert exit_code == code, output
    check = next(c for c in document["checks"] if c["name"] == "robust_accuracy")
    assert check["status"] == status
    assert document["verdict"]["status"] == ("fail" if code else "no_threshold")


def test_save_adversarial_never_replaces_an_input(tmp_path) -> None:
    data = tmp_path / "digits.npy"
    data.write_bytes((SAMPLES / "digits_test.npy").read_bytes())
    before = data.read_bytes()
    result = CliRunner().invoke(main, [
        "audit", MLP, "--data", str(data), "--samples", "2", "--attack", "--save-adversarial", str(data),
    ])
    assert result.exit_code == 2 and data.read_bytes() == before


def test_attack_options_need_attack_and_radii(tmp_path) -> None:
    code, _, output = audit(tmp_path, "--attack-eps", "0.1")
    assert code == 2 and "need --attack" in output
    code, _, output = audit(tmp_path, "--attack", "--fail-robust-below", "0.5")
    assert code == 2 and "--attack-eps" in output
    with pytest.raises(InputError):
        AttackConfig(radii=(0.0,))


def test_finite_differences_attack_and_say_so(tmp_path) -> None:
    code, document, output = audit(tmp_path, "--attack", "--gradients", "fd", samples=2)
    assert code == 0, output
    assert all("finite-difference" in s["attack"]["method"] for s in document["samples"])
    assert all(s["attack"]["verified"] for s in document["samples"])


def test_finite_differences_over_the_budget_are_not_run_and_the_gate_cannot_pass(tmp_path) -> None:
    """2 d + 1 = 129 evaluations per Jacobian on 8x8 digits: a budget of 100 is refused with the reason."""
    code, document, output = audit(
        tmp_path, "--attack", "--gradients", "fd", "--attack-budget", "100", "--attack-eps", "0.1",
        "--fail-robust-below", "0.5", samples=2,
    )
    assert code == 1, output
    summary = document["attack_summary"]
    assert summary["status"] == "not_run" and "129 evaluations" in summary["reason"]
    assert all(s["attack"]["method"] == "not run" for s in document["samples"])
    assert any(note.startswith("Attacks were asked for but did not run") for note in document["limitations"])
    assert document["verdict"]["status"] == "inconclusive"


def test_piecewise_constant_models_are_not_attacked(tmp_path) -> None:
    """A tree forest: gradients are zero almost everywhere, so the attacks say 'not run' and why."""
    from tests.graph.test_ml_models import _tree_model

    model, data, out = _tree_model(tmp_path / "forest.onnx"), tmp_path / "x.npy", tmp_path / "a.json"
    np.save(data, np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32))
    result = CliRunner().invoke(main, ["attack", model, "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())["attack_summary"]
    assert summary["status"] == "not_run" and "TreeEnsembleClassifier" in summary["reason"]
    assert "correlation: not computed" in result.output
    assert not_run_reason("graph", "", 64, 2000) is None


def summary_with(rates: list[tuple[float, float]], floor: float | None, status: str = "run") -> AttackSummary:
    rows = tuple(RadiusSuccess(eps, rate, rate, 10) for eps, rate in rates)
    return AttackSummary(status, None if status == "run" else "no gradients", "inf", "graph", None, 100, 10, 10,  # type: ignore[arg-type]
                         rows, None, (), "exact", None, 0, 0, 0.0, floor)


def test_robust_accuracy_check_and_gate() -> None:
    passing = Verdict("pass", 1.0, "max", 0.5, None, "max lambda_max 0.5 is at or below the threshold 1")
    failed = robust_accuracy_check(summary_with([(0.01, 0.0), (0.1, 0.6)], 0.5))
    assert failed.status == "failed" and "0.4" in failed.detail
    gated = gate_robustness(passing, [failed])
    assert gated.status == "fail" and not gated.passed and "lambda_max" in gated.reason
    held = robust_accuracy_check(summary_with([(0.01, 0.0), (0.1, 0.5)], 0.5))
    assert held.status == "passed" and gate_robustness(passing, [held]) is passing
    assert robust_accuracy_check(summary_with([(0.1, 0.9)], None)).status == "not_applicable"
    not_run = robust_accuracy_check(summary_with([], 0.5, "not_run"))
    assert not_run.status == "not_computed" and gate_robustness(passing, [not_run]).status == "inconclusive"


def test_success_counts_either_attacks_verified_example() -> None:
    pgd = PgdOutcome((0.1, 0.2), (False, True), 0.15, 10)
    results = [
        AttackResult("2", 0.05, True, "deepfool", 1, 1, 0, pgd=pgd),  # DeepFool's example lies in both balls
        AttackResult("2", 0.5, True, "deepfool", 1, 1, 0, pgd=pgd),  # PGD's only in the larger one
        AttackResult("2", None, False, "deepfool", 1, None, 0, pgd=PgdOutcome((0.1, 0.2), (False, False), None, 10)),
    ]
    rows = success_by_radius(results, (0.1, 0.2))
    assert [r.success_rate for r in rows] == pytest.approx([1 / 3, 2 / 3])
    assert [r.pgd_success_rate for r in rows] == pytest.approx([0, 2 / 3])
    assert [r.robust_accuracy for r in rows] == pytest.approx([2 / 3, 1 / 3])
