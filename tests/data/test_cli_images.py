"""The image options through the command line: JPEG lists in NHWC, labels in the report, one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from fimaudit.cli import main
from tests.conftest import SAMPLES
from tests.data.helpers import image_linear_model

MLP = str(SAMPLES / "mlp.onnx")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_jpeg_csv_list_nhwc_with_resize_and_crop(tmp_path: Path) -> None:
    weight = np.random.default_rng(5).normal(size=(3, 6 * 6 * 3)).astype(np.float32)
    (tmp_path / "model.onnx").write_bytes(image_linear_model(weight, (6, 6, 3)).SerializeToString())
    rng = np.random.default_rng(6)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(9, 12, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.jpg")
        rows.append(f"p{i}.jpg,{i % 3}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    spec = "resize=8,center_crop=6,scale=1/255,mean=0.5,std=0.2,0.25,0.3,layout=NHWC,channels=RGB"
    result = invoke(
        "audit",
        str(tmp_path / "model.onnx"),
        "--data",
        str(tmp_path / "list.csv"),
        "--preprocess",
        spec,
        "--space",
        "pixel",
        "--json",
        str(tmp_path / "a.json"),
        "--report",
        str(tmp_path / "a.html"),
    )
    assert result.exit_code == 0, result.output
    assert "pixel space" in result.output
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["space"] == "pixel" and document["data"]["sample_shape"] == [6, 6, 3]
    assert document["data"]["preprocess"]["resize"] == [8] and document["data"]["preprocess"]["layout"] == "NHWC"
    assert [s["true_class"] for s in document["samples"]] == [0, 1, 2]
    assert document["labels"]["count"] == 3
    assert all(s["lambda_max"] == s["lambda_max_by_space"]["pixel"]["lambda_max"] for s in document["samples"])
    html = (tmp_path / "a.html").read_text()
    assert "True labels" in html and "Correct vs misclassified" in html and "center_crop" in html


def test_refusals_are_one_line_and_exit_two(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    cases = [
        (["--data", str(folder)], "image data needs its preprocessing"),
        (["--data", str(SAMPLES / "digits_test.npy"), "--space", "pixel"], "--space pixel needs image data"),
        (["--data", str(SAMPLES / "digits_test.npy"), "--preprocess", "scale=1"], "applies to image data"),
        (["--data", str(folder), "--preprocess", "channels=L,resize=9"], "expects [1, 8, 8]"),
    ]
    for options, message in cases:
        result = invoke("audit", MLP, "--no-bounds", *options)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.output
