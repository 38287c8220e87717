"""The audit's identity pins the weights: external-data files are hashed, and a combined digest
over the ``.onnx`` and every data file changes when the weights do, though ``model.sha256`` does not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from fimaudit.cli import main
from fimaudit.graph.loader import combined_digest, load_model
from tests.hostile import models


def _model_with_weights(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    weights = folder / "weights.bin"
    weights.write_bytes(np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32).tobytes())
    model = folder / "model.onnx"
    model.write_bytes(models.with_external_weight("weights.bin").SerializeToString())
    return model, weights


def test_swapping_the_weights_changes_the_combined_digest_only(tmp_path: Path) -> None:
    model, weights = _model_with_weights(tmp_path, seed=0)
    first = load_model(model)
    weights.write_bytes(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32).tobytes())
    second = load_model(model)
    assert first.sha256 == second.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert first.combined_sha256 != second.combined_sha256
    entry = second.external_data[0]
    assert (entry.location, entry.size) == ("weights.bin", 48)
    assert entry.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert second.combined_sha256 == combined_digest([("model.onnx", second.sha256), ("weights.bin", entry.sha256)])
    assert second.external_data_files == ["weights.bin"]


def test_combined_digest_is_over_sorted_lines() -> None:
    lines = "a.bin\0" + "1" * 64 + "\n" + "model.onnx\0" + "2" * 64 + "\n"
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert combined_digest([("model.onnx", "2" * 64), ("a.bin", "1" * 64)]) == expected


def test_json_report_and_inspect_record_the_weights(tmp_path: Path) -> None:
    model, weights = _model_with_weights(tmp_path, seed=0)
    json_path, report_path = tmp_path / "audit.json", tmp_path / "report.html"
    result = CliRunner().invoke(main, ["audit", str(model), "--samples", "2", "--no-bounds",
                                       "--json", str(json_path), "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    document = json.loads(json_path.read_text())["model"]
    weights_sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert document["external_data"] == [{"location": "weights.bin", "sha256": weights_sha, "size": 48}]
    assert document["combined_sha256"] == load_model(model).combined_sha256 != document["sha256"]
    html = report_path.read_text()
    assert document["combined_sha256"] in html and weights_sha in html
    inspected = CliRunner().invoke(main, ["inspect", str(model), "--json", str(tmp_path / "inspect.json")])
    assert inspected.exit_code == 0, inspected.output
    assert f"combined:    {document['combined_sha256']}" in inspected.output
    assert f"external:    weights.bin (48 bytes, sha256 {weights_sha})" in inspected.output
    assert json.loads((tmp_path / "inspect.json").read_text())["model"]["external_data"][0]["sha256"] == weights_sha
