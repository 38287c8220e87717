"""The bundled sample models load, run in ONNX Runtime and still classify digits.

Needs only numpy, onnx and onnxruntime. The models are rebuilt by
``sample_models/build_samples.py`` (torch, development only).

Accuracy thresholds on the 64 bundled test images: measured argmax accuracy
(sigmoid model: probability > 0.5 against ``digit % 2``) was 0.969 to 1.0 for
every model when they were built, so each must reach ``MIN_SAMPLE_ACCURACY`` =
0.9 (a margin of at least 4 images), and must reproduce the ``sample_accuracy``
recorded in the manifest to within one image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "sample_models"
MANIFEST = json.loads((SAMPLES_DIR / "manifest.json").read_text())
ENTRIES = {entry["file"]: entry for entry in MANIFEST["models"]}

EXPECTED_FILES = {
    "mlp.onnx",
    "mlp_constants.onnx",
    "mlp_softmax.onnx",
    "binary_sigmoid.onnx",
    "vgg_small.onnx",
    "resnet_small.onnx",
    "densenet_small.onnx",
    "vit_small.onnx",
}
FAMILIES = {"mlp", "vgg", "resnet", "densenet", "transformer"}
EXPORTERS = {"torchscript", "dynamo", "onnx-postprocessed"}
OUTPUT_KINDS = {"logits", "probabilities", "sigmoid"}
MIN_SAMPLE_ACCURACY = 0.9
MAX_MODEL_BYTES = 2 * 1024 * 1024
NUM_SAMPLES = 64


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_model(entry: dict, x: np.ndarray) -> np.ndarray:
    """Run one manifest entry on x, one image at a time if its batch is fixed."""
    sess = session(SAMPLES_DIR / entry["file"])
    name = entry["input"]["name"]
    batch = entry["input"]["shape"][0]
    if isinstance(batch, int):
        chunks = [
            sess.run([entry["output"]["name"]], {name: x[i : i + batch]})[0]
            for i in range(0, len(x), batch)
        ]
        return np.concatenate(chunks)
    return sess.run([entry["output"]["name"]], {name: x})[0]


def predictions(outputs: np.ndarray, kind: str) -> np.ndarray:
    if kind == "sigmoid":
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


def target_labels(entry: dict, labels: np.ndarray) -> np.ndarray:
    if entry["labels"] == "odd":
        return labels % 2
    assert entry["labels"] == "digit"
    return labels


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    x = np.load(SAMPLES_DIR / "digits_test.npy")
    y = np.load(SAMPLES_DIR / "digits_test_labels.npy")
    return x, y


def test_manifest_lists_every_sample_model() -> None:
    assert set(ENTRIES) == EXPECTED_FILES
    assert len(ENTRIES) == len(MANIFEST["models"])


def test_sample_inputs(samples: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = samples
    assert x.dtype == np.float32 and x.shape == (NUM_SAMPLES, 1, 8, 8)
    assert y.dtype == np.int64 and y.shape == (NUM_SAMPLES,)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) <= set(range(10))
    with np.load(SAMPLES_DIR / "digits_test.npz") as npz:
        assert list(npz.files) == ["input"]
        np.testing.assert_array_equal(npz["input"], x)


@pytest.mark.parametrize("file", sorted(EXPECTED_FILES))
def test_manifest_entry_is_well_formed(file: str) -> None:
    entry = ENTRIES[file]
    assert entry["family"] in FAMILIES
    assert entry["exporter"] in EXPORTERS
    assert entry["output"]["kind"] in OUTPUT_KINDS
    assert entry["input"]["name"] == "input"
    assert entry["input"]["shape"][1:] == [1, 8, 8]
    assert entry["params"] > 0
    model = onnx.load(str(SAMPLES_DIR / file), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == entry["opset"]
    assert model.ir_version == entry["ir_version"]
    external = [
        t.name
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    assert bool(external) == entry["has_external_data"]
    data_file = SAMPLES_DIR / f"{file}.data"
    assert data_file.is_file() == entry["has_external_data"]
    size = (SAMPLES_DIR / file).stat().st_size
    if data_file.is_file():
        size += data_file.stat().st_size
    assert size < MAX_MODEL_BYTES


@pytest.mark.parametrize("file", sorted(EXPECTED_FILES))
def test_model_checks_and_declares_manifest_shapes(file: str) -> None:
    entry = ENTRIES[file]
    onnx.checker.check_model(str(SAMPLES_DIR / file))  # by path: finds external data
    sess = session(SAMPLES_DIR / file)
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert inp.name == entry["input"]["name"]
    assert inp.type == "tensor(float)"
    assert out.name == entry["output"]["name"]
    for declared, actual in [
        (entry["input"]["shape"], inp.shape),
        (entry["output"]["shape"], out.shape),
    ]:
        assert len(declared) == len(actual)
        batch, *rest = declared
        if isinstance(batch, int):
            assert actual[0] == batch
        else:  # dynamic batch: a symbolic dimension in the graph
            assert isinstance(actual[0], str) or actual[0] is None
        assert list(actual[1:]) == rest


@pytest.mark.parametrize("file", sorted(EXPECTED_FILES))
def test_model_classifies_samples(
    file: str, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    entry = ENTRIES[file]
    x, y = samples
    outputs = run_model(entry, x)
    width = 1 if entry["output"]["kind"] == "sigmoid" else entry["num_classes"]
    assert outputs.shape == (NUM_SAMPLES, width)
    assert outputs.dtype == np.float32
    assert np.isfinite(outputs).all()
    if entry["output"]["kind"] in ("probabilities", "sigmoid"):
        assert outputs.min() >= 0.0 and outputs.max() <= 1.0
    if entry["output"]["kind"] == "probabilities":
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)
    acc = float((predictions(outputs, entry["output"]["kind"]) == target_labels(entry, y)).mean())
    assert acc >= MIN_SAMPLE_ACCURACY
    assert abs(acc - entry["sample_accuracy"]) <= 1.0 / NUM_SAMPLES + 1e-9


def test_constant_and_softmax_variants_match_mlp(
    samples: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = samples
    constants_model = onnx.load(str(SAMPLES_DIR / "mlp_constants.onnx"))
    assert len(constants_model.graph.initializer) == 0
    assert any(n.op_type == "Constant" for n in constants_model.graph.node)
    logits = run_model(ENTRIES["mlp.onnx"], x)
    np.testing.assert_array_equal(run_model(ENTRIES["mlp_constants.onnx"], x), logits)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        run_model(ENTRIES["mlp_softmax.onnx"], x),
        shifted / shifted.sum(axis=1, keepdims=True),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "file", sorted(f for f, e in ENTRIES.items() if e["has_external_data"])
)
def test_external_data_loads_from_another_directory(
    file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    x = np.load(SAMPLES_DIR / "digits_test.npy")[:1]
    entry = ENTRIES[file]
    out = session(SAMPLES_DIR / file).run(None, {entry["input"]["name"]: x})[0]
    assert out.shape == (1, entry["num_classes"])
