"""Shared by the tools/corpus/export_<exporter>.py scripts: the float64 Fisher quantities of a
reference Jacobian, and writing one corpus entry (model, data, reference, manifest line).

Why one module: every exporter script must compute lambda_max the same way from its framework's
float64 Jacobian, so that the committed references differ only in where J came from. Needs only
numpy (and onnx to read the opset); each exporter script runs in its own framework venv
(/work/venvs/<framework>), where fimaudit is not installed.

lambda_max in float64 without forming C^{1/2}: with p = softmax(z), q = sqrt(p),
C = diag(p) - p p^T = A A^T for A = diag(q) (I - q q^T) (I - q q^T is a projector, q^T q = 1), so
F = J^T C J = (A^T J)^T (A^T J) and lambda_max(F) = sigma_max(A^T J)^2, trace(F) = ||A^T J||_F^2.
The K x d matrix A^T J is formed in float64 and its singular values taken by LAPACK: no
K x K product of J is squared in low precision, no eigenvalue of C is square-rooted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
MANIFEST = CORPUS / "manifest.json"
LICENCE = "Apache-2.0 (built here by the script named in 'generated_by'; random or synthetic-data weights)"


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def lambda_max_and_trace(jacobian: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """Exact lambda_max(F) and trace(F) of one sample, F = J^T (diag p - p p^T) J, in float64."""
    j = np.asarray(jacobian, dtype=np.float64).reshape(jacobian.shape[0], -1)
    q = np.sqrt(softmax64(logits))
    # A^T = (I - q q^T) diag(q): A^T J = (I - q q^T) (diag(q) J).
    scaled = q[:, None] * j
    factor = scaled - np.outer(q, q @ scaled)
    sigma = np.linalg.svd(factor, compute_uv=False)
    return float(sigma[0] ** 2), float(np.sum(factor * factor))


def fisher_reference(jacobians: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [lambda_max_and_trace(j, z) for j, z in zip(jacobians, logits)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def opset_of(model_path: Path) -> int:
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    return int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_entry(
    name: str, *, inputs: np.ndarray, jacobians: np.ndarray, logits: np.ndarray, entry: dict[str, Any],
    extra_arrays: dict[str, np.ndarray] | None = None, data_arrays: dict[str, np.ndarray] | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Write ``<name>_x.npy`` and ``<name>_ref.npz`` beside ``<name>.onnx`` and update the manifest.

    ``jacobians`` [N, K, *input] float64 d logits / d input from the framework; ``logits`` [N, K]
    float64. The reference also holds lambda_max and trace per sample, computed here. With
    ``data_arrays`` (a model fed by several named inputs, e.g. token ids) the data is
    ``<name>_inputs.npz`` holding them, and ``inputs`` is the tensor J is taken with respect to.
    ``model_name``: another entry's model file, when one model is audited on two data sets.
    """
    model = CORPUS / f"{model_name or name}.onnx"
    if not model.exists():
        raise FileNotFoundError(model)
    jacobians = np.asarray(jacobians, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    if jacobians.shape[:2] != logits.shape or jacobians.shape[0] != inputs.shape[0]:
        raise ValueError(f"shapes disagree: J {jacobians.shape}, logits {logits.shape}, x {inputs.shape}")
    lam, trace = fisher_reference(jacobians, logits)
    if data_arrays is None:
        data = CORPUS / f"{name}_x.npy"
        np.save(data, np.ascontiguousarray(inputs, dtype=np.float32))
    else:
        data = CORPUS / f"{name}_inputs.npz"
        np.savez(data, **data_arrays)
    reference = CORPUS / f"{name}_ref.npz"
    np.savez_compressed(reference, jacobian=jacobians, logits=logits, lambda_max=lam, trace=trace,
                        **(extra_arrays or {}))
    full = {
        "name": name, "file": model.name, "data": data.name, "reference": reference.name,
        "opset": opset_of(model), "num_samples": int(inputs.shape[0]), "num_classes": int(logits.shape[1]),
        "input_shape": list(inputs.shape[1:]), "input_size": int(np.prod(inputs.shape[1:])),
        "sha256": sha256(model), "file_size": model.stat().st_size,
        "reference_lambda_max": [float(v) for v in lam], "reference_top_prob": [float(v) for v in softmax64(logits).max(axis=1)],
        "licence": LICENCE, **entry,
    }
    update_manifest(full)
    return full


def update_manifest(entry: dict[str, Any]) -> None:
    document = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"models": []}
    models = {m["name"]: m for m in document["models"]}
    previous = models.get(entry["name"], {})
    # A reviewer's xfail note survives a rebuild; the script does not decide it.
    if "xfail" in previous and "xfail" not in entry:
        entry["xfail"] = previous["xfail"]
    models[entry["name"]] = entry
    document["models"] = sorted(models.values(), key=lambda m: m["name"])
    MANIFEST.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def relative_max_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-300))
