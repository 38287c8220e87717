"""Image folders and CSV lists: the same tensors as an .npy, one-line errors, hostile files refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.data import images as images_module
from fimaudit.data import load_data
from fimaudit.errors import InputError
from fimaudit.graph.loader import load_model
from fimaudit.graph.selection import select_input_output
from tests.conftest import SAMPLES
from tests.data.helpers import write_folder

GREY_SPEC = "channels=L,scale=1/255,mean=0.5,std=0.25"


@pytest.fixture(scope="module")
def digits_selection():
    return select_input_output(load_model(SAMPLES / "mlp.onnx"))


def _pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 8, 8), dtype=np.uint8)


def _audit(data: Path, **options) -> dict:
    from fimaudit.report.document import build_document

    config = AuditConfig(model_path=str(SAMPLES / "mlp.onnx"), data_path=str(data), bounds=False, **options)
    return build_document(run_audit(config))


def test_png_folder_audits_like_the_same_tensors_as_npy(tmp_path: Path) -> None:
    pixels = _pixels(6)
    labels = [3, 1, 3, 0, 1, 7]
    write_folder(tmp_path / "images", pixels, labels)
    # The folder lists 0/, 1/, 3/, 7/ in that order: the .npy holds the same samples in that order.
    order = sorted(range(6), key=lambda i: (str(labels[i]), i))
    tensors = ((pixels[order].astype(np.float64) / 255 - 0.5) / 0.25).astype(np.float32)[:, None]
    np.save(tmp_path / "same.npy", tensors)
    np.save(tmp_path / "labels.npy", np.array([labels[i] for i in order]))

    from_images = _audit(tmp_path / "images", preprocess=GREY_SPEC, method="lanczos", budget=20)
    from_npy = _audit(tmp_path / "same.npy", labels_path=str(tmp_path / "labels.npy"), method="lanczos", budget=20)
    got = [s["lambda_max"] for s in from_images["samples"]]
    want = [s["lambda_max"] for s in from_npy["samples"]]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert [s["true_class"] for s in from_images["samples"]] == [labels[i] for i in order]
    assert from_images["labels"]["accuracy"] == from_npy["labels"]["accuracy"]
    assert from_images["data"]["preprocess"]["scale_text"] == "1/255"
    assert from_images["data"]["preprocess"]["pixel_to_model"]["scale"] == [pytest.approx(4 / 255)]
    assert from_npy["data"]["preprocess"] is None


def test_csv_list_with_class_names_and_spec_from_json_file(tmp_path: Path, digits_selection) -> None:
    names = write_folder(tmp_path / "pics", _pixels(3))
    (tmp_path / "list.csv").write_text(
        "path,label\n" + "".join(f"pics/{n},{c}\n" for n, c in zip(names, "bab", strict=True))
    )
    (tmp_path / "spec.json").write_text('{"channels": "L", "scale": "1/255", "mean": [0.5], "std": 0.25}')
    data = load_data(tmp_path / "list.csv", digits_selection, preprocess=str(tmp_path / "spec.json"))
    assert data.labels.tolist() == [1, 0, 1] and data.class_names == ("a", "b")
    assert data.preprocess is not None and data.preprocess.source == "spec.json"
    expected = (_pixels(3).astype(np.float64) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(data.inputs[:, 0], expected, rtol=1e-6)


def test_spec_from_model_metadata(tmp_path: Path, digits_selection) -> None:
    write_folder(tmp_path / "images", _pixels(2))
    data = load_data(tmp_path / "images", digits_selection, metadata={"fimaudit.preprocess": GREY_SPEC})
    assert data.preprocess is not None and "metadata_props" in data.preprocess.source
    with pytest.raises(InputError, match=r"image data needs its preprocessing.*expects float32 \[N, 1, 8, 8\]"):
        load_data(tmp_path / "images", digits_selection)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("channels=L,resize=10", r"gives samples of shape \[1, 10, 10\].*expects \[1, 8, 8\]; set resize/center_crop"),
        ("channels=RGB", r"takes 1 channel\(s\): set channels=L"),
        ("channels=L,layout=NHWC", r"\[8, 8, 1\] \(NHWC\).*the model is NCHW"),
        ("channels=L,scale=1/0", r"scale='1/0' is not a number"),
        ("channels=L,mean=0.1,0.2", r"mean has 2 values; give 1 or one per channel \(1\)"),
        ("colour=L", r"unknown preprocessing key"),
    ],
)
def test_wrong_specs_are_one_line_errors(tmp_path: Path, digits_selection, spec: str, message: str) -> None:
    write_folder(tmp_path / "images", _pixels(1))
    with pytest.raises(InputError, match=message) as caught:
        load_data(tmp_path / "images", digits_selection, preprocess=spec)
    assert "\n" not in str(caught.value)


def test_resize_then_center_crop_gives_the_model_size(tmp_path: Path, digits_selection) -> None:
    big = np.random.default_rng(1).integers(0, 256, size=(1, 12, 20), dtype=np.uint8)
    write_folder(tmp_path / "images", big)
    data = load_data(tmp_path / "images", digits_selection, preprocess="channels=L,resize=10,center_crop=8")
    assert data.inputs.shape == (1, 1, 8, 8)


def test_paths_leaving_the_folder_are_refused(tmp_path: Path, digits_selection) -> None:
    outside = tmp_path / "outside"
    write_folder(outside, _pixels(1))
    inside = tmp_path / "data"
    write_folder(inside, _pixels(1))
    for row, message in [("../outside/img000.png", r"leaves the list's folder"), ("/etc/passwd", "absolute path")]:
        (inside / "list.csv").write_text(f"{row},0\n")
        with pytest.raises(InputError, match=message):
            load_data(inside / "list.csv", digits_selection, preprocess=GREY_SPEC)
    os.symlink(outside / "img000.png", inside / "link.png")
    with pytest.raises(InputError, match="symlink to a place outside"):
        load_data(inside, digits_selection, preprocess=GREY_SPEC)
    (inside / "link.png").unlink()
    (inside / "list.csv").unlink()
    os.symlink(outside, inside / "linked_folder")
    (inside / "list.csv").write_text("linked_folder/img000.png,0\n")
    with pytest.raises(InputError, match="symlink to a place outside"):
        load_data(inside / "list.csv", digits_selection, preprocess=GREY_SPEC)


def test_hostile_image_files_are_one_line_errors(tmp_path: Path, digits_selection, monkeypatch) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"a.png is not a readable PNG/JPEG/BMP/WebP image"):
        load_data(folder, digits_selection, preprocess=GREY_SPEC)
    Image.fromarray(_pixels(1)[0]).save(folder / "a.png", format="GIF")  # a decoder that is not enabled
    with pytest.raises(InputError, match="not a readable PNG/JPEG/BMP/WebP image"):
        load_data(folder, digits_selection, preprocess=GREY_SPEC)
    Image.fromarray(_pixels(1)[0]).save(folder / "a.png")
    full = (folder / "a.png").read_bytes()
    (folder / "a.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match="a.png is a corrupt or truncated image|not a readable"):
        load_data(folder, digits_selection, preprocess=GREY_SPEC)
    Image.fromarray(_pixels(1)[0]).save(folder / "a.png")
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(InputError, match=r"declares 8x8 pixels, more than the 63 .*decompression bomb"):
        load_data(folder, digits_selection, preprocess=GREY_SPEC)


def test_images_beside_class_folders_are_refused(tmp_path: Path, digits_selection) -> None:
    write_folder(tmp_path / "images", _pixels(2), [0, 1])
    Image.fromarray(_pixels(1)[0]).save(tmp_path / "images" / "stray.png")
    with pytest.raises(InputError, match="both directly .*stray.png.* and in sub-folders"):
        load_data(tmp_path / "images", digits_selection, preprocess=GREY_SPEC)


def test_labels_outside_the_model_classes_are_refused(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", _pixels(2), [0, 12])
    with pytest.raises(InputError, match=r"sample 1 has label 12, but the model has 10 classes"):
        _audit(tmp_path / "images", preprocess=GREY_SPEC)
