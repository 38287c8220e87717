"""The command line through CliRunner: exit codes, JSON fields, one-line errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

import fimaudit
from fimaudit.cli import main
from tests.conftest import SAMPLES

MLP = str(SAMPLES / "mlp.onnx")
DATA = str(SAMPLES / "digits_test.npy")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_version_and_help() -> None:
    assert fimaudit.__version__ in invoke("--version").output
    for command in ([], ["audit"], ["inspect"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_inspect_prints_description_and_choice() -> None:
    result = invoke("inspect", str(SAMPLES / "mlp_softmax.onnx"))
    assert result.exit_code == 0, result.output
    assert "sha256:" in result.output
    assert "audit output: probabilities (probabilities; logits: input of the final Softmax)" in result.output
    assert "Gemm 2" in result.output


def test_audit_writes_json_with_the_contract_fields(tmp_path) -> None:
    out = tmp_path / "audit.json"
    report = tmp_path / "audit.html"
    result = invoke("audit", MLP, "--data", DATA, "--samples", "5", "--gradients", "fd", "--json", str(out), "--report", str(report))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["schema_version"] == 1
    assert document["tool"] == {"name": "fimaudit", "version": fimaudit.__version__}
    model = document["model"]
    assert set(model) >= {"path", "sha256", "producer", "opset", "input", "output"}
    assert model["input"] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}
    assert model["output"]["kind"] == "logits"
    assert document["architecture"]["family"] in {"vgg", "resnet", "densenet", "transformer", "mlp", "unknown"}
    assert document["method"]["estimator"] == "auto"  # the default: exact for 10 classes
    assert document["method"]["gradients"] == "fd"
    assert document["method"]["provider"] == "CPUExecutionProvider"
    assert len(document["samples"]) == 5
    for index, sample in enumerate(document["samples"]):
        assert sample["index"] == index
        assert sample["kind"] == "exact" and sample["interval"] is None
        assert sample["lambda_max"] > 0 and sample["trace"] >= sample["lambda_max"]
        assert 0.1 <= sample["top_prob"] <= 1 and 0 <= sample["predicted_class"] < 10
    values = [s["lambda_max"] for s in document["samples"]]
    assert document["summary"]["max"] == pytest.approx(max(values))
    assert document["summary"]["median"] == pytest.approx(float(np.median(values)))
    assert document["summary"]["count"] == 5
    assert document["verdict"]["threshold"] is None and document["verdict"]["passed"] is True
    assert "<html" in report.read_text()


def test_fail_above_exits_one_and_passes_when_above_max(tmp_path) -> None:
    out = tmp_path / "a.json"
    result = invoke("audit", MLP, "--data", DATA, "--samples", "4", "--gradients", "fd", "--json", str(out))
    maximum = json.loads(out.read_text())["summary"]["max"]
    failing = invoke("audit", MLP, "--data", DATA, "--samples", "4", "--gradients", "fd", "--fail-above", str(maximum * 0.5))
    assert failing.exit_code == 1, failing.output
    assert "FAIL" in failing.output
    passing = invoke("audit", MLP, "--data", DATA, "--samples", "4", "--gradients", "fd", "--fail-above", str(maximum * 2))
    assert passing.exit_code == 0, passing.output


def test_synthetic_data_is_seeded(tmp_path) -> None:
    documents = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        result = invoke("audit", MLP, "--samples", "3", "--seed", "7", "--gradients", "fd", "--json", str(out))
        assert result.exit_code == 0, result.output
        documents.append(json.loads(out.read_text()))
    assert [s["lambda_max"] for s in documents[0]["samples"]] == [s["lambda_max"] for s in documents[1]["samples"]]
    assert documents[0]["data"]["synthetic"] is True


def _bad_inputs(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    wrong_shape = tmp_path / "wrong.npy"
    np.save(wrong_shape, np.zeros((3, 1, 7, 7), np.float32))
    nan = tmp_path / "nan.npy"
    values = np.zeros((3, 1, 8, 8), np.float32)
    values[1, 0, 2, 2] = np.nan
    np.save(nan, values)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {
        "missing model": (["audit", str(tmp_path / "none.onnx")], "does not exist"),
        "corrupt model": (["audit", str(corrupt)], "not a valid ONNX file"),
        "wrong shape": (["audit", MLP, "--data", str(wrong_shape)], "expects [N] + [1, 8, 8]"),
        "nan": (["audit", MLP, "--data", str(nan)], "NaN/Inf"),
        "pickle": (["audit", MLP, "--data", str(pickled)], "never unpickles"),
    }


@pytest.mark.parametrize("case", ["missing model", "corrupt model", "wrong shape", "nan", "pickle"])
def test_bad_input_is_one_line_and_exit_two(tmp_path, case: str) -> None:
    args, message = _bad_inputs(tmp_path)[case]
    result = CliRunner().invoke(main, args + ["--gradients", "fd"] if args[0] == "audit" and len(args) > 2 else args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if "rror" in line]
    assert len(error_lines) == 1


def test_no_bounds_skips_the_analytic_bound(tmp_path) -> None:
    out = tmp_path / "a.json"
    result = invoke("audit", MLP, "--data", DATA, "--samples", "2", "--no-bounds", "--json", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["bound"] is None
    assert document["architecture"]["family"] == "mlp"
    assert all(sample.get("bound") is None for sample in document["samples"])


def test_check_samples_zero_runs_no_gradient_check_and_a_negative_count_is_exit_two(tmp_path) -> None:
    out = tmp_path / "a.json"
    result = invoke("audit", MLP, "--data", DATA, "--samples", "2", "--gradients", "graph", "--no-bounds",
                    "--check-samples", "0", "--json", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["gradient_check"] is None
    bad = invoke("audit", MLP, "--data", DATA, "--check-samples", "-1")
    assert bad.exit_code == 2 and "--check-samples" in bad.output
