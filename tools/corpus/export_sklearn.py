"""Exporter corpus, scikit-learn through skl2onnx, with analytic float64 Jacobians.

Why: skl2onnx graphs mix the default ONNX domain with ``ai.onnx.ml`` operators
(LinearClassifier, Normalizer, ZipMap); issue 16 asks for such an export of our own, against a
float64 reference computed from the estimator itself.

    /work/venvs/jax/bin/python tools/corpus/export_sklearn.py   # scikit-learn, skl2onnx, onnx

Models, trained for a few seconds on scikit-learn's digits (8x8 images scaled to [0, 1], the
first 1437 images as training data), exported with ``options={"zipmap": False}``
(outputs ``label`` and ``probabilities``), opset 17 (ai.onnx.ml 1):

- ``sklearn_mlp_tanh``: MLPClassifier(hidden_layer_sizes=(32, 16), activation="tanh",
  random_state=0, max_iter=300). Reference J = W3^T diag(1 - h2^2) W2^T diag(1 - h1^2) W1^T in
  float64 from ``coefs_`` / ``intercepts_`` rounded to float32 first (the values the ONNX file
  holds); logits = the last layer's pre-softmax activations.
- ``sklearn_logreg``: LogisticRegression(max_iter=500) (multinomial). J = coef_ (constant; rounded to float32 as exported);
  logits = decision_function in float64.

Data: the first 4 images after the training split, float32 [4, 64].
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import sklearn
import skl2onnx
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporter_common import CORPUS, relative_max_error, write_entry  # noqa: E402

LOG = logging.getLogger("export_sklearn")
OPSET = 17
TRAIN = 1437


def as_exported(array: np.ndarray) -> np.ndarray:
    """The float32 value skl2onnx writes into the graph, as float64 (the reference's weights)."""
    return np.asarray(array).astype(np.float32).astype(np.float64)


def mlp_reference(model: MLPClassifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 logits [N, K] and Jacobians [N, K, d] of a tanh MLPClassifier."""
    weights = [as_exported(w) for w in model.coefs_]
    biases = [as_exported(b) for b in model.intercepts_]
    jacobians, logits = [], []
    for row in x.astype(np.float64):
        h, jacobian = row, np.eye(row.shape[0])
        for w, b in zip(weights[:-1], biases[:-1]):
            h = np.tanh(h @ w + b)
            jacobian = (1.0 - h * h)[:, None] * (w.T @ jacobian)
        logits.append(h @ weights[-1] + biases[-1])
        jacobians.append(weights[-1].T @ jacobian)
    return np.stack(jacobians), np.stack(logits)


def ort_error(path: Path, x: np.ndarray, probabilities: np.ndarray) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return relative_max_error(session.run(["probabilities"], {session.get_inputs()[0].name: x})[0], probabilities)


def export(name: str, model, x: np.ndarray, jacobians: np.ndarray, logits: np.ndarray, note: str, accuracy: float) -> None:
    path = CORPUS / f"{name}.onnx"
    proto = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset={"": OPSET, "ai.onnx.ml": 1})
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    entry = write_entry(name, inputs=x, jacobians=jacobians, logits=logits, entry={
        "exporter": f"skl2onnx {skl2onnx.__version__} (zipmap=False)", "exporter_family": "skl2onnx",
        "framework": f"scikit-learn {sklearn.__version__}", "generated_by": "tools/corpus/export_sklearn.py",
        "batch": "dynamic", "ops": sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in proto.graph.node}),
        "output_kind": "probabilities (output 'probabilities'; label output too)",
        "architecture": note, "reference_method": "analytic Jacobian in numpy float64 from the fitted coefficients",
        "test_accuracy": round(accuracy, 4),
        "ort_vs_framework_rel_err": ort_error(path, x, model.predict_proba(x)),
    })
    LOG.info("%s: opset %d, %d bytes, lambda_max %s, ORT vs sklearn %s", path.name, entry["opset"], entry["file_size"],
             np.round(entry["reference_lambda_max"], 4), entry["ort_vs_framework_rel_err"])


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    CORPUS.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    train_x, train_y = images[:TRAIN], digits.target[:TRAIN]
    test_x, test_y = images[TRAIN:], digits.target[TRAIN:]
    x = test_x[:4]

    mlp = MLPClassifier(hidden_layer_sizes=(32, 16), activation="tanh", random_state=0, max_iter=300).fit(train_x, train_y)
    jacobians, logits = mlp_reference(mlp, x)
    # Sanity against scikit-learn's own (float32 or float64) arithmetic, not the reference's accuracy.
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    assert relative_max_error(shifted / shifted.sum(1, keepdims=True), mlp.predict_proba(x)) < 1e-5
    export("sklearn_mlp_tanh", mlp, x, jacobians, logits, "MLPClassifier (32, 16) tanh, softmax output",
           float(mlp.score(test_x, test_y)))

    logreg = LogisticRegression(max_iter=500).fit(train_x, train_y)
    coef, intercept = as_exported(logreg.coef_), as_exported(logreg.intercept_)
    logits = x.astype(np.float64) @ coef.T + intercept
    assert relative_max_error(logits, logreg.decision_function(x)) < 1e-5
    jacobians = np.broadcast_to(coef, (x.shape[0], *coef.shape)).copy()
    export("sklearn_logreg", logreg, x, jacobians, logits, "LogisticRegression (multinomial), ai.onnx.ml LinearClassifier",
           float(logreg.score(test_x, test_y)))


if __name__ == "__main__":
    main()
