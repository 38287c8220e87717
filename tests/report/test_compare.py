"""fimaudit compare: side-by-side audits, ranking, and whether exports of one network agree."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from fimaudit.audit import AuditConfig
from fimaudit.cli import main
from fimaudit.compare import check_consistency
from fimaudit.compare_audit import run_comparison
from fimaudit.errors import InputError
from fimaudit.report.compare_report import build_comparison_document
from fimaudit.report.render import render_comparison
from tests.conftest import SAMPLES, linear_classifier
from tests.report.helpers import DIGITS

MLPS = [str(SAMPLES / name) for name in ("mlp.onnx", "mlp_constants.onnx", "mlp_softmax.onnx")]
VGG = str(SAMPLES / "vgg_small.onnx")


@pytest.fixture(scope="module")
def comparison():
    return run_comparison(MLPS + [VGG], AuditConfig(model_path="", data_path=DIGITS, samples=12, gradients="fd"))


GROUP = "mlp.onnx,mlp_constants.onnx,mlp_softmax.onnx"


def test_three_exports_of_the_mlp_land_on_the_same_numbers(comparison) -> None:
    consistency = check_consistency(comparison.outcomes, groups=[GROUP])
    document = build_comparison_document(comparison, consistency=consistency)
    agreement = document["agreement"]
    assert agreement["mode"] == "groups" and agreement["groups"] == [GROUP.split(",")]
    assert [(p["a"], p["b"]) for p in agreement["pairs"]] == [
        ("mlp.onnx", "mlp_constants.onnx"), ("mlp.onnx", "mlp_softmax.onnx"), ("mlp_constants.onnx", "mlp_softmax.onnx")]
    for pair in agreement["pairs"]:
        assert pair["status"] == "agree" and pair["samples"] == 12 and pair["same_predicted_class"] == 12
        assert pair["fraction_agreeing"] == 1.0 and pair["max_relative_difference"] <= 1e-3
    values = [[s["lambda_max"] for s in m["audit"]["samples"]] for m in document["models"][:3]]
    np.testing.assert_allclose(values[1], values[0], rtol=1e-3)
    np.testing.assert_allclose(values[2], values[0], rtol=1e-3)
    assert document["consistency"]["status"] == "agree" and document["consistency"]["passed"] is True


def test_different_networks_on_the_same_input_are_paired_and_disagree(comparison) -> None:
    """The VGG takes the same digits and has 10 classes: comparable, and it does not agree with the MLP."""
    consistency = check_consistency(comparison.outcomes)
    assert consistency.mode == "auto" and len(consistency.pairs) == 6
    vgg_pairs = [p for p in consistency.pairs if "vgg_small.onnx" in (p.a, p.b)]
    assert {p.status for p in vgg_pairs} == {"disagree"} and consistency.status == "disagree"
    assert not consistency.passed
    assert any("differ in structure" in cause for cause in vgg_pairs[0].expected)
    ranking_only = check_consistency(comparison.outcomes, check=False)
    assert ranking_only.status == "not_checked" and ranking_only.passed and ranking_only.pairs == ()


def test_ranking_orders_models_by_the_statistic(comparison) -> None:
    document = build_comparison_document(comparison, statistic="p95")
    ranked = document["ranking"]["by_measured"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["value"] for r in ranked] == sorted(r["value"] for r in ranked)
    by_label = {m["label"]: m["summary"]["p95"] for m in document["models"]}
    assert all(by_label[r["model"]] == r["value"] for r in ranked)
    by_bound = document["ranking"]["by_bound"]
    assert document["ranking"]["bound_missing"] == []
    assert [r["value"] for r in by_bound] == sorted(r["value"] for r in by_bound)
    bounds = {m["label"]: m["audit"]["bound"]["value"] for m in document["models"]}
    assert all(bounds[r["model"]] == r["value"] for r in by_bound)


def test_ranking_by_bound_is_not_computed_without_bounds() -> None:
    config = AuditConfig(model_path="", data_path=DIGITS, samples=3, gradients="fd", bounds=False)
    document = build_comparison_document(run_comparison(MLPS[:1] + [VGG], config))
    assert document["ranking"]["by_bound"] is None and len(document["ranking"]["bound_missing"]) == 2
    assert "Ranking by analytic bound: not computed" in render_comparison(document)


def test_comparison_report_renders_every_model(comparison) -> None:
    html = render_comparison(build_comparison_document(comparison, consistency=check_consistency(comparison.outcomes, groups=[GROUP])))
    for name in ("mlp.onnx", "mlp_constants.onnx", "mlp_softmax.onnx", "vgg_small.onnx"):
        assert name in html
    assert ">AGREE<" in html and "Pair by pair" in html and "Samples on which they differ most" in html
    assert html.count('class="identity"') == 3, "one log-log scatter with its identity line per pair"
    assert "Ranking by analytic bound" in html and "Ranking by analytic bound: not computed" not in html
    assert "<script" not in html.lower() and "default-src 'none'" in html


def test_a_changed_weight_is_caught_as_disagreement(tmp_path) -> None:
    model = onnx.load(MLPS[0])
    first = model.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * 1.05, first.name))
    changed = tmp_path / "mlp_changed.onnx"
    onnx.save(model, changed)
    out = tmp_path / "c.json"
    result = CliRunner().invoke(main, ["compare", MLPS[0], str(changed), "--data", DIGITS, "--samples", "6", "--json", str(out)])
    assert result.exit_code == 1, result.output
    document = json.loads(out.read_text())
    (pair,) = document["agreement"]["pairs"]
    assert pair["status"] == "disagree" and pair["max_relative_difference"] > 1e-2
    assert document["consistency"]["status"] == "disagree"
    assert "DISAGREE: models that take the same input do not agree" in result.output


def test_cli_compare_writes_report_and_json(tmp_path) -> None:
    report, out = tmp_path / "c.html", tmp_path / "c.json"
    result = CliRunner().invoke(main, ["compare", *MLPS, "--data", DIGITS, "--samples", "4", "--report", str(report), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "1. mlp" in result.output and "AGREE: models that take the same input agree" in result.output
    document = json.loads(out.read_text())
    assert document["kind"] == "comparison" and document["schema_version"] == 2
    assert document["models"][0]["audit"]["schema_version"] == 1
    assert [m["status"] for m in document["models"]] == ["audited"] * 3
    assert "<html" in report.read_text()


def test_a_model_that_cannot_be_audited_is_reported_not_dropped(save_model, tmp_path) -> None:
    tabular = save_model(linear_classifier(np.ones((3, 4))), "tabular.onnx")
    out = tmp_path / "c.json"
    result = CliRunner().invoke(main, ["compare", MLPS[0], str(tabular), "--data", DIGITS, "--samples", "3", "--json", str(out)])
    assert result.exit_code == 1, result.output
    models = json.loads(out.read_text())["models"]
    assert models[1]["status"] == "error" and "InputError" in models[1]["error"]
    assert "could not be audited: tabular.onnx" in result.output


def test_nothing_to_compare_is_an_input_error(save_model) -> None:
    tabular = str(save_model(linear_classifier(np.ones((3, 4))), "tabular.onnx"))
    with pytest.raises(InputError):
        run_comparison([MLPS[0]], AuditConfig(model_path="", data_path=DIGITS))
    result = CliRunner().invoke(main, ["compare", tabular, tabular, "--data", DIGITS])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_most_disagreeing_samples_are_shown_beside_their_inputs(tmp_path) -> None:
    """issue 17 item 4: each pair's worst samples in a table and, for image data, as pictures."""
    model = onnx.load(VGG)
    first = next(init for init in model.graph.initializer if numpy_helper.to_array(init).ndim == 4)
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * 1.5, first.name))
    changed = tmp_path / "vgg_changed.onnx"
    onnx.save(model, changed)
    report, out = tmp_path / "c.html", tmp_path / "c.json"
    result = CliRunner().invoke(main, ["compare", VGG, str(changed), "--data", DIGITS, "--samples", "5", "--no-bounds",
                                       "--report", str(report), "--json", str(out)])
    assert result.exit_code == 1, result.output
    (pair,) = json.loads(out.read_text())["agreement"]["pairs"]
    worst = [s["index"] for s in pair["worst_samples"]]
    html = report.read_text()
    assert "Their inputs, in the table's order" in html
    for index in worst:
        assert f'alt="sample {index}"' in html
    assert html.count('src="data:image/png;base64,') >= len(worst)


def test_non_image_data_says_why_the_inputs_are_not_drawn(tmp_path, save_model) -> None:
    weight = np.random.default_rng(0).standard_normal((3, 5))
    path_a = save_model(linear_classifier(weight, np.zeros(3)), "a.onnx")
    path_b = save_model(linear_classifier(1.5 * weight, np.zeros(3)), "b.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32))
    report = tmp_path / "c.html"
    result = CliRunner().invoke(main, ["compare", str(path_a), str(path_b), "--data", str(data), "--report", str(report)])
    assert result.exit_code == 1, result.output
    assert "Inputs not drawn: samples of shape [5] are not images" in report.read_text()
