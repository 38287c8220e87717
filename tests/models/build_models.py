"""Rebuild the committed third-party-exporter test models (see README.md beside this file).

Why these files: fimaudit must work on what other exporters than PyTorch emit. Two sources:

* skl2onnx: a scikit-learn MLPClassifier and a LogisticRegression trained on the digits data
  (64 features in [0, 1]), each converted twice: with skl2onnx's default ZipMap output (a
  sequence of maps, which fimaudit cannot differentiate and must explain) and with
  ``options={'zipmap': False}`` (a probability tensor).
* paddle2onnx, via a PyPI wheel: PaddleOCR's trained text-direction classifier
  (``ch_ppocr_mobile_v2.0_cls_infer.onnx``, 2 classes, 0 or 180 degrees) shipped inside
  ``rapidocr-onnxruntime`` 1.4.4 (Apache-2.0). It is copied unmodified; its sha256 is checked.

Development-only (needs scikit-learn, skl2onnx and pip with access to PyPI)::

    /work/venv/bin/python tests/models/build_models.py [--out-dir tests/models]

Deterministic: fixed split and seeds, so the same library versions give the same weights and graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
SKLEARN_OPSET = 17
DIGITS_SAMPLES = 32
TEXT_SHAPE = (3, 48, 16)  # RapidOCR feeds 3x48x192; see README.md for why height 48, width 16
TEXT_SAMPLES = 4

WHEEL = "rapidocr-onnxruntime==1.4.4"
WHEEL_MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
WHEEL_MODEL = "ppocr_text_direction_cls.onnx"
WHEEL_MODEL_SHA256 = "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def build_sklearn(out_dir: Path) -> list[dict]:
    """MLP and logistic regression on digits, each with and without ZipMap."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    x_train, x_test, y_train, y_test = digits_split()
    np.save(out_dir / "digits64.npy", np.ascontiguousarray(x_test[:DIGITS_SAMPLES]))
    estimators = {
        "mlp": MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0),
        "logreg": LogisticRegression(max_iter=1000),
    }
    entries = []
    for name, estimator in estimators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: accuracy is what matters here
            estimator.fit(x_train, y_train)
        accuracy = float(estimator.score(x_test, y_test))
        for variant, options in (("zipmap", None), ("tensor", {"zipmap": False})):
            proto = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, 64]))],
                            options=options, target_opset=SKLEARN_OPSET)
            path = out_dir / f"sklearn_{name}_{variant}.onnx"
            onnx.save(proto, str(path))
            entries.append({
                "file": path.name, "exporter": "skl2onnx", "estimator": type(estimator).__name__,
                "output": variant, "data": "digits64.npy", "test_accuracy": round(accuracy, 4),
                "licence": "built here (Apache-2.0, as fimaudit)",
            })
    return entries


def fetch_wheel_model(out_dir: Path) -> dict:
    """Download the wheel with pip, extract the classifier, check its sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WHEEL_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_MODEL_SHA256:
        raise SystemExit(f"{WHEEL_MEMBER}: sha256 {digest} differs from the recorded {WHEEL_MODEL_SHA256}")
    (out_dir / WHEEL_MODEL).write_bytes(data)
    images = np.random.default_rng(0).uniform(-1.0, 1.0, (TEXT_SAMPLES, *TEXT_SHAPE)).astype(np.float32)
    np.save(out_dir / "text_3x48x16.npy", images)
    return {
        "file": WHEEL_MODEL, "exporter": "paddle2onnx (PaddlePaddle)", "source": f"PyPI {WHEEL}: {WHEEL_MEMBER}",
        "sha256": digest, "output": "softmax probabilities [N, 2]", "data": "text_3x48x16.npy",
        "licence": "Apache-2.0 (LICENSE-Apache-2.0.txt)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--skip-wheel", action="store_true", help="do not download the PyPI wheel")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    manifest = args.out_dir / "manifest.json"
    entries = build_sklearn(args.out_dir)
    if not args.skip_wheel:
        entries.append(fetch_wheel_model(args.out_dir))
    elif manifest.exists():
        entries += [e for e in json.loads(manifest.read_text())["models"] if e["file"] == WHEEL_MODEL]
    manifest.write_text(json.dumps({"models": entries}, indent=1) + "\n")


if __name__ == "__main__":
    main()
