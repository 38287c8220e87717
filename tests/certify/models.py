"""The sample models made ready for certificates: certifier, float64 reference, graph gradients."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fimaudit.audit import AuditConfig, PreparedModel, intake, prepare_model
from fimaudit.certify.certifier import Certifier
from fimaudit.fisher.covariance import softmax
from fimaudit.gradients import make_source
from fimaudit.graph.selection import LOGITS
from tests.bounds.reference64 import Reference64

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
MODELS = ["mlp", "vgg_small", "resnet_small", "densenet_small"]


@dataclass
class Ready:
    prepared: PreparedModel
    certifier: Certifier
    reference: Reference64
    gradients: object  # InputJacobian of the graph source (ONNX Runtime, float32)
    inputs: np.ndarray


@functools.cache
def ready(name: str) -> Ready:
    path = str(SAMPLES / f"{name}.onnx")
    inputs = np.load(SAMPLES / "digits_test.npy")
    prepared = prepare_model(intake(path), AuditConfig(model_path=path), inputs[:1])
    name_in = prepared.selection.input_name
    certifier = Certifier(prepared.logits_model, name_in, LOGITS, tuple(inputs.shape[1:]))
    reference = Reference64(prepared.logits_model, name_in, LOGITS, batch_one=prepared.selection.fixed_batch == 1)
    source = make_source("graph", prepared.runner, inputs.shape[1:], prepared.num_classes).source
    return Ready(prepared, certifier, reference, source, inputs)


def ascent_direction(jacobians: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """An ascent direction of lambda_max(F) per point: J^T g with J held fixed (exact for ReLU nets).

    With w the top eigenvector of F and a = J w, lambda = Var_p(a) and
    d Var_p(a) / d z_j = p_j ((a_j - mean_p a)^2 - Var_p(a)).
    """
    directions = []
    for jac, z in zip(jacobians, logits, strict=True):
        p = softmax(z)
        fisher_root = np.sqrt(p)[:, None] * (jac - p @ jac)  # C^{1/2}-like factor: F = R^T R
        _, _, vt = np.linalg.svd(fisher_root, full_matrices=False)
        a = jac @ vt[0]
        mean = p @ a
        var = p @ (a - mean) ** 2
        g = p * ((a - mean) ** 2 - var)
        directions.append(jac.T @ g)
    return np.array(directions)
