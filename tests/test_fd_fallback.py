"""A finite-difference audit that scales (issue 16 item 4): its cost estimated before it starts,
the black-box sketch under --method auto for large inputs, a refusal past --max-time."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from click.testing import CliRunner

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.cli import main
from fimaudit.errors import ResourceError
from fimaudit.fisher.covariance import covariance_sqrt, softmax_covariance
from fimaudit.fisher.fd_cost import DENSE_FD_FACTOR, FdCost, evaluations_per_sample, fd_route, format_duration
from tests.conftest import linear_classifier

#: 4,800 inputs: 2 d = 9,600 evaluations per sample > 16 x 400, so auto leaves the dense route.
LARGE = 4800


def write_linear(tmp_path, features: int, classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = 0.05 * rng.standard_normal((classes, features))
    bias = rng.standard_normal(classes)
    path = tmp_path / "linear.onnx"
    import onnx

    onnx.save(linear_classifier(weight, bias), path)
    data = rng.uniform(0.0, 1.0, (2, features)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    return path, tmp_path / "x.npy", weight.astype(np.float32).astype(np.float64), bias, data


def test_route_and_evaluations_per_sample() -> None:
    assert fd_route(3200, None)[0] == "exact"  # 6,400 = 16 x 400
    assert fd_route(3201, None)[0] == "blackbox"
    assert fd_route(150528, None)[0] == "blackbox" and "301056 evaluations" in fd_route(150528, None)[1]
    assert fd_route(3201, 1000)[0] == "exact"  # a larger sketch budget keeps the dense route longer
    assert DENSE_FD_FACTOR == 16
    assert evaluations_per_sample("exact", 150528, None) == 301056
    assert evaluations_per_sample("auto", 150528, None) == 400
    assert evaluations_per_sample("auto", 64, None) == 128
    assert evaluations_per_sample("blackbox", 150528, 100) == 100
    assert evaluations_per_sample("lanczos", 100, 50) == 300


def test_cost_refusal_names_the_estimate_and_the_remedies() -> None:
    cost = FdCost("exact", "exact", 301056, 16, 0.004)
    assert cost.evaluations == 4816896
    assert cost.expected_seconds == pytest.approx(19267.584)
    cost.check(None)
    cost.check(20000)
    with pytest.raises(ResourceError) as raised:
        cost.check(900)
    message = str(raised.value)
    assert "\n" not in message
    for part in ("301056 model evaluations per sample", "4816896 for 16 samples", "5.4 h", "--max-time 900",
                 "--method blackbox", "--samples"):
        assert part in message, (part, message)
    assert format_duration(3.2) == "3.2 s" and format_duration(300) == "5.0 min" and format_duration(4 * 86400) == "4.0 days"


def test_auto_uses_the_black_box_sketch_on_a_large_input_and_says_so(tmp_path, caplog) -> None:
    path, data_path, weight, bias, data = write_linear(tmp_path, LARGE)
    with caplog.at_level(logging.INFO, logger="fimaudit"):
        result = run_audit(AuditConfig(model_path=str(path), data_path=str(data_path), gradients="fd", bounds=False))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "finite differences" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "400 model evaluations per sample, 800 for 2 samples; expected" in warnings[0]
    assert "black-box sketch" in warnings[0] and "9600 evaluations" in warnings[0]
    assert "black-box sketch" in result.gradients_note
    cost = result.gradient_settings["fd_cost"]
    assert cost["method"] == "blackbox" and cost["requested"] == "auto" and cost["evaluations"] == 800
    assert cost["seconds_per_evaluation"] > 0
    progress = [r.getMessage() for r in caplog.records if "model evaluations/s" in r.getMessage()]
    assert [m.split(" done")[0] for m in progress] == ["sample 1/2", "sample 2/2"]
    for audit in result.samples:
        assert audit.result.diagnostics["method"] == "blackbox"
        assert audit.result.model_evaluations == 400
        root = covariance_sqrt(softmax_covariance(audit.logits))  # K x K side: same non-zero spectrum
        truth = float(np.linalg.eigvalsh(root @ weight @ weight.T @ root)[-1])
        low, high = audit.result.interval
        assert audit.result.kind == "estimate" and low <= truth <= high


def test_small_inputs_stay_exact_under_auto(tmp_path) -> None:
    path, data_path, weight, _, _ = write_linear(tmp_path, 300)
    result = run_audit(AuditConfig(model_path=str(path), data_path=str(data_path), gradients="fd", bounds=False))
    assert all(a.result.kind == "exact" and a.result.diagnostics["method"] == "exact" for a in result.samples)
    assert result.gradient_settings["fd_cost"]["evaluations_per_sample"] == 600
    assert "black-box" not in result.gradients_note


def test_explicit_exact_is_kept_and_warned_about(tmp_path, caplog) -> None:
    path, data_path, weight, _, _ = write_linear(tmp_path, LARGE)
    with caplog.at_level(logging.WARNING, logger="fimaudit"):
        result = run_audit(AuditConfig(model_path=str(path), data_path=str(data_path), samples=1, gradients="fd",
                                       method="exact", bounds=False))
    assert result.samples[0].result.kind == "exact"
    warnings = [r.getMessage() for r in caplog.records if "finite differences for --method exact" in r.getMessage()]
    assert len(warnings) == 1 and "9600 model evaluations per sample" in warnings[0]
    assert "--method blackbox would take 400 per sample" in warnings[0]


def test_estimate_beyond_max_time_is_refused_before_any_sample(tmp_path, monkeypatch) -> None:
    import fimaudit.fisher.exact_estimator as exact_module

    path, data_path, *_ = write_linear(tmp_path, LARGE)
    monkeypatch.setattr(exact_module, "exact", lambda *a: pytest.fail("a sample ran"))
    with pytest.raises(ResourceError, match=r"9600 model evaluations per sample.*beyond --max-time 1e-06 s; use --method blackbox"):
        run_audit(AuditConfig(model_path=str(path), data_path=str(data_path), gradients="fd", method="exact",
                              max_time=1e-6, bounds=False))


def test_cli_max_time_refusal_is_one_line_exit_2(tmp_path) -> None:
    path, data_path, *_ = write_linear(tmp_path, LARGE)
    result = CliRunner().invoke(main, ["audit", str(path), "--data", str(data_path), "--gradients", "fd",
                                       "--method", "exact", "--max-time", "0.000001", "--no-bounds"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("fimaudit: error")]
    assert len(lines) == 1 and "--max-time" in lines[0] and "--method blackbox" in lines[0]
    assert "--max-time SECONDS" in CliRunner().invoke(main, ["audit", "--help"]).output
