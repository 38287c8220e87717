"""The certificate stage end to end: CLI options, JSON, verdict, radius, the eps -> 0 limit, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fimaudit.certify.radius import certified_radius
from fimaudit.certify.registry import NotCertified
from fimaudit.cli import main
from tests.certify.models import SAMPLES, ready

DATA = str(SAMPLES / "digits_test.npy")


def _audit(tmp_path, model: str, *options: str) -> tuple[int, dict, str]:
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(main, ["audit", str(SAMPLES / model), "--data", DATA, "--samples", "3",
                                       "--no-bounds", "--json", str(out), *options])
    return result.exit_code, json.loads(out.read_text()) if out.exists() else {}, result.output


def test_cli_writes_certificates_radius_and_the_certified_pass(tmp_path) -> None:
    code, document, output = _audit(tmp_path, "mlp.onnx", "--certify", "0.0001,0.001", "--fail-above", "50",
                                    "--input-range", "0,1")
    assert code == 0, output
    for sample in document["samples"]:
        certificates = sample["certificates"]
        assert [c["epsilon"] for c in certificates] == [0.0001, 0.001]
        assert {c["kind"] for c in certificates} == {"certified_upper_bound"}
        assert set(certificates[0]) >= {"epsilon", "norm", "value", "kind", "unstable_activations", "seconds"}
        assert all(c["value"] >= sample["lambda_max"] * (1 - 1e-4) for c in certificates)  # float32 audit value
        assert sample["certified_radius"] > 0.0
    assert document["certification"]["input_range"] == [0.0, 1.0]
    check = next(c for c in document["checks"] if c["name"] == "certified")
    assert check["status"] == "passed"
    assert "certified" in document["verdict"]["reason"]


def test_certificate_above_threshold_is_undecided_not_failed(tmp_path) -> None:
    code, document, output = _audit(tmp_path, "vgg_small.onnx", "--certify", "0.01", "--fail-above", "60")
    assert code == 0, output  # measured max 49 < 60: the loose certificate does not fail the audit
    assert next(c for c in document["checks"] if c["name"] == "certified")["status"] == "not_decided"


def test_model_without_rules_is_refused_by_name(tmp_path) -> None:
    code, _, output = _audit(tmp_path, "vit_small.onnx", "--certify", "0.001")
    assert code == 2
    assert "not certified: op LayerNormalization at node" in output


@pytest.mark.parametrize("options", [["--input-range", "0,1"], ["--certify", "-1"], ["--certify", "0.1,x"]])
def test_bad_certify_options_are_usage_errors(tmp_path, options: list[str]) -> None:
    code, _, output = _audit(tmp_path, "mlp.onnx", *options)
    assert code == 2, output


def test_unknown_op_raises_not_certified() -> None:
    from onnx import TensorProto, helper

    from fimaudit.certify.certifier import Certifier

    graph = helper.make_graph([helper.make_node("Softplus", ["x"], ["y"], name="soft")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(NotCertified, match="not certified: op Softplus at node 'soft'"):
        Certifier(model, "x", "y", (3,)).bound(np.zeros(3), 0.1)


@pytest.mark.parametrize("name", ["mlp", "vgg_small", "resnet_small", "densenet_small"])
def test_limit_as_eps_goes_to_zero_is_the_exact_lambda_max(name: str) -> None:
    """B(x, eps) -> lambda_max(F(x)) (float64 reference) from above, not just to ||C|| ||J||^2."""
    model = ready(name)
    centre = model.inputs[5].astype(np.float64)
    exact = model.reference.lambda_max(centre)
    scale = float(np.linalg.norm(centre))
    values = [model.certifier.bound(centre, f * scale).value for f in (1e-6, 1e-8, 0.0)]
    assert all(v >= exact for v in values)
    assert values[0] >= values[1] >= values[2]
    assert values[1] <= exact * (1 + 1e-4) and values[2] <= exact * (1 + 1e-6)


def test_certified_radius_is_certified_and_within_the_tolerance() -> None:
    model = ready("vgg_small")
    centre = model.inputs[2].astype(np.float64)
    at_point = model.certifier.bound(centre, 0.0).value
    threshold = 5.0 * at_point
    found = certified_radius(model.certifier, centre, threshold, tolerance=0.05)
    assert found.epsilon > 0.0 and not found.capped
    assert model.certifier.bound(centre, found.epsilon).value <= threshold
    assert model.certifier.bound(centre, found.epsilon * 1.05 * 1.0001).value > threshold
    below = certified_radius(model.certifier, centre, 0.5 * at_point)
    assert below.epsilon == 0.0  # even B(x, 0) = lambda_max(F(x)) is above it


def test_html_report_has_the_certificate_section(tmp_path) -> None:
    report = tmp_path / "report.html"
    code, _, output = _audit(tmp_path, "mlp.onnx", "--certify", "0.001,0.01", "--report", str(report))
    assert code == 0, output
    html = report.read_text()
    assert 'id="certificates"' in html and "Not certified:" in html
    assert "certified B(x, eps)" in html  # the B-against-eps chart of the most sensitive samples


def test_compare_certifies_every_model(tmp_path) -> None:
    out = tmp_path / "compare.json"
    result = CliRunner().invoke(main, ["compare", str(SAMPLES / "mlp.onnx"), str(SAMPLES / "vgg_small.onnx"),
                                       "--data", DATA, "--samples", "2", "--no-bounds", "--no-check",
                                       "--certify", "0.001", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for model in json.loads(out.read_text())["models"]:
        assert all(len(s["certificates"]) == 1 for s in model["audit"]["samples"])


def test_certify_stage_reports_progress_per_sample(tmp_path) -> None:
    """A 3x32x32 certificate takes minutes: the stage says how far it is, one call per sample."""
    from fimaudit.audit import AuditConfig, run_audit
    from fimaudit.certify.stage import CertifyConfig

    calls: list[tuple[int, int]] = []
    config = AuditConfig(model_path=str(SAMPLES / "mlp.onnx"), data_path=DATA, samples=3, bounds=False,
                         certify=CertifyConfig((0.001,)))
    result = run_audit(config, certify_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert all(len(sample.certificates) == 1 for sample in result.samples)
