"""Op cases for fimaudit/autodiff/rules/ml.py (the ``ai.onnx.ml`` ops of scikit-learn exports).

onnx's ReferenceEvaluator runs these ops in numpy at the input's precision, so the table's float64
checks (adjoint identity, central differences) apply as they are; ONNX Runtime runs them in
float32 only (the spec's output type), which is the table's second check. Inputs avoid the
places where the functions are not smooth or where the two runtimes differ: Normalizer MAX gets
positive, distinct values (ONNX Runtime divides by max(x), the reference by max |x|: they agree
there), L1 gets values away from 0, and the piecewise-constant ops (Binarizer, tree ensembles)
get inputs away from their thresholds, where their derivative is exactly zero.
tests/graph/test_ml_models.py checks the same rules against analytic numpy Jacobians.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.autodiff.opcases import OpCase, Sampler, away_from_zero, distinct, normal, positive, weights_rng

ML = "ai.onnx.ml"
_rng = weights_rng(16)
W3 = _rng.normal(size=(3, 4))
B3 = _rng.normal(size=3)


def _ml_case(
    id: str, op_type: str, x_shape: Sequence[int], attributes: dict, outputs: Sequence[str] = ("y",),
    sample: Sampler = normal, ml_opset: int = 3, fd_rtol: float = 1e-6, f32_rtol: float = 1e-4,
) -> OpCase:
    def nodes() -> list[onnx.NodeProto]:
        return [helper.make_node(op_type, ["x"], list(outputs), domain=ML, **attributes)]

    return OpCase(
        id=id, nodes=nodes, x_shape=tuple(x_shape), sample=sample, covers=(f"{ML}::{op_type}",),
        fd_rtol=fd_rtol, f32_rtol=f32_rtol, domains=((ML, ml_opset),),
    )


def linear_classifier(transform: str, weights: np.ndarray = W3, bias: np.ndarray = B3) -> dict:
    return {
        "coefficients": weights.reshape(-1).tolist(), "intercepts": bias.tolist(),
        "classlabels_ints": list(range(weights.shape[0])), "post_transform": transform, "multi_class": 1,
    }


def one_split_tree() -> dict:
    """One tree: x[1] <= 0.0 -> leaf 1, else leaf 2 (a stump)."""
    return {
        "nodes_treeids": [0, 0, 0], "nodes_nodeids": [0, 1, 2], "nodes_featureids": [1, 0, 0],
        "nodes_modes": ["BRANCH_LEQ", "LEAF", "LEAF"], "nodes_values": [0.0, 0.0, 0.0],
        "nodes_truenodeids": [1, 0, 0], "nodes_falsenodeids": [2, 0, 0],
    }


def tree_classifier() -> dict:
    return {
        **one_split_tree(), "class_treeids": [0, 0, 0, 0], "class_nodeids": [1, 1, 2, 2], "class_ids": [0, 1, 0, 1],
        "class_weights": [0.8, 0.2, 0.3, 0.7], "classlabels_int64s": [0, 1],
    }


def tree_regressor() -> dict:
    return {**one_split_tree(), "target_treeids": [0, 0], "target_nodeids": [1, 2], "target_ids": [0, 0],
            "target_weights": [-1.5, 2.5], "n_targets": 1}


def tree_ensemble() -> dict:
    """ai.onnx.ml opset 5's TreeEnsemble: the same stump."""
    return {
        "n_targets": 1, "aggregate_function": 1, "post_transform": 0, "tree_roots": [0],
        "nodes_modes": numpy_helper.from_array(np.array([0], dtype=np.uint8)),  # BRANCH_LEQ
        "nodes_featureids": [1], "nodes_splits": numpy_helper.from_array(np.array([0.0], dtype=np.float32)),
        "nodes_truenodeids": [0], "nodes_trueleafs": [1], "nodes_falsenodeids": [1], "nodes_falseleafs": [1],
        "leaf_targetids": [0, 0], "leaf_weights": numpy_helper.from_array(np.array([-1.5, 2.5], dtype=np.float32)),
    }


CASES: list[OpCase] = [
    _ml_case("LinearClassifier/softmax", "LinearClassifier", (5, 4), linear_classifier("SOFTMAX"), ("label", "y")),
    _ml_case("LinearClassifier/none", "LinearClassifier", (5, 4), linear_classifier("NONE"), ("label", "y")),
    _ml_case("LinearClassifier/logistic", "LinearClassifier", (5, 4), linear_classifier("LOGISTIC"), ("label", "y")),
    _ml_case("LinearClassifier/softmax-zero", "LinearClassifier", (5, 4), linear_classifier("SOFTMAX_ZERO"), ("label", "y")),
    _ml_case("LinearClassifier/two-rows-binary", "LinearClassifier", (4, 4),
             linear_classifier("SOFTMAX", np.vstack([-W3[0], W3[0]]), np.array([-B3[0], B3[0]])), ("label", "y")),
    _ml_case("LinearRegressor/two-targets", "LinearRegressor", (5, 4),
             {"coefficients": W3[:2].reshape(-1).tolist(), "intercepts": B3[:2].tolist(), "targets": 2}),
    _ml_case("Normalizer/max-positive", "Normalizer", (3, 5), {"norm": "MAX"}, sample=lambda rng, shape: distinct(rng, shape) + 100.0),
    _ml_case("Normalizer/l1", "Normalizer", (3, 5), {"norm": "L1"}, sample=away_from_zero),
    _ml_case("Normalizer/l2", "Normalizer", (3, 5), {"norm": "L2"}),
    _ml_case("Scaler/per-feature", "Scaler", (3, 4), {"offset": _rng.normal(size=4).tolist(), "scale": _rng.uniform(0.5, 2, 4).tolist()}),
    _ml_case("Scaler/one-value", "Scaler", (3, 4), {"offset": [0.5], "scale": [3.0]}, sample=positive),
    _ml_case("Binarizer/away-from-threshold", "Binarizer", (3, 4), {"threshold": 0.0}, sample=away_from_zero),
    _ml_case("TreeEnsembleClassifier/stump", "TreeEnsembleClassifier", (4, 3), tree_classifier(), ("label", "y"), sample=away_from_zero),
    _ml_case("TreeEnsembleRegressor/stump", "TreeEnsembleRegressor", (4, 3), tree_regressor(), sample=away_from_zero),
    _ml_case("TreeEnsemble/stump-opset5", "TreeEnsemble", (4, 3), tree_ensemble(), sample=away_from_zero, ml_opset=5),
]
