"""scikit-learn exports (ai.onnx.ml ops, ZipMap) and score heads fimaudit used to refuse (issue 16 item 6).

The ml ops run in ONNX Runtime in float32 only, so their rules are checked here against analytic
numpy Jacobians (float64 formulas) through ORT float32 gradient graphs, to 1e-5 relative, and
against float32 central differences of ORT's forward run (h = 1e-2 on inputs of order 1: the
truncation error of these smooth maps is ~1e-4 and the rounding error ~1e-7 / 1e-2 = 1e-5, so
2e-3 relative). tests/autodiff/cases_ml.py adds the table's adjoint identity and float64 checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fimaudit.autodiff.build import COTANGENT, build_vjp_model
from fimaudit.cli import main
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.loader import load_model
from fimaudit.graph.selection import select_input_output

MODELS = Path(__file__).resolve().parents[1] / "models"
ML = "ai.onnx.ml"


def _model(nodes, x_type=TensorProto.FLOAT, x_shape=(None, 4), y_shape=None, outputs=("y",), initializers=()):
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", x_type, ["N", *x_shape[1:]])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, y_shape) for name in outputs], list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)])
    model.ir_version = 8
    return model


def _session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _graph_jacobian(model, x, output="y"):
    """d output / d x per row, [N, K, F], from the VJP graph run by ORT (one-hot cotangents)."""
    vjp = _session(build_vjp_model(model, "x", output))
    forward = _session(model).run([output], {"x": x})[0]
    k = forward.shape[1]
    seeds = np.zeros((k, *forward.shape), dtype=np.float32)
    for c in range(k):
        seeds[c, :, c] = 1
    (pulled,) = vjp.run(["fimaudit_input_grad"], {"x": x, COTANGENT: seeds})
    return pulled.transpose(1, 0, 2).astype(np.float64)


def _fd_jacobian(model, x, output="y", h=1e-2):
    session = _session(model)
    columns = []
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = h
        plus, minus = session.run([output], {"x": x + step})[0], session.run([output], {"x": x - step})[0]
        columns.append((plus.astype(np.float64) - minus) / (2 * h))
    return np.stack(columns, axis=-1)


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


RNG = np.random.default_rng(6)
W = RNG.normal(size=(3, 4))
B = RNG.normal(size=3)
X = RNG.normal(size=(5, 4)).astype(np.float32)


def _classifier(transform: str) -> onnx.ModelProto:
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "y"], domain=ML, coefficients=W.reshape(-1).tolist(),
        intercepts=B.tolist(), classlabels_ints=[0, 1, 2], post_transform=transform,
    )
    return _model([node], y_shape=["N", 3], outputs=("y",))


def _softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("transform", ["NONE", "SOFTMAX", "LOGISTIC"])
def test_linear_classifier_rule_against_the_analytic_jacobian(transform: str) -> None:
    model = _classifier(transform)
    w = W.astype(np.float32).astype(np.float64)
    s = X.astype(np.float64) @ w.T + B.astype(np.float32)
    if transform == "NONE":
        expected = np.broadcast_to(w, (X.shape[0], *w.shape))
    elif transform == "LOGISTIC":
        q = 1 / (1 + np.exp(-s))
        expected = (q * (1 - q))[:, :, None] * w
    else:
        p = _softmax(s)
        expected = (p[:, :, None] * np.eye(3)[None] - p[:, :, None] * p[:, None, :]) @ w  # (diag p - p p^T) W
    got = _graph_jacobian(model, X)
    assert _relative(got, expected) < 1e-5
    assert _relative(got, _fd_jacobian(model, X)) < 2e-3


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_rule_against_the_analytic_jacobian(norm: str) -> None:
    model = _model([helper.make_node("Normalizer", ["x"], ["y"], domain=ML, norm=norm)], y_shape=["N", 4])
    x = (RNG.uniform(0.3, 2.0, size=(4, 4)) * RNG.choice([-1, 1], size=(4, 4))).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) + 3.0  # one clear maximum per row (ONNX Runtime's MAX divides by max(x))
    xs = x.astype(np.float64)
    if norm == "MAX":
        n = xs.max(axis=1, keepdims=True)
        s = (xs == n).astype(np.float64)
    elif norm == "L1":
        n, s = np.abs(xs).sum(axis=1, keepdims=True), np.sign(xs)
    else:
        n = np.sqrt((xs * xs).sum(axis=1, keepdims=True))
        s = xs / n
    y = xs / n
    expected = (np.eye(4)[None] - y[:, :, None] * s[:, None, :]) / n[:, :, None]
    got = _graph_jacobian(model, x)
    assert _relative(got, expected) < 1e-5
    assert _relative(got, _fd_jacobian(model, x)) < 2e-3


def test_scaler_rule_is_the_scale() -> None:
    scale, offset = [0.5, 2.0, -1.0, 3.0], [0.1, 0.2, 0.3, 0.4]
    model = _model([helper.make_node("Scaler", ["x"], ["y"], domain=ML, scale=scale, offset=offset)], y_shape=["N", 4])
    got = _graph_jacobian(model, X)
    assert _relative(got, np.broadcast_to(np.diag(scale), got.shape)) < 1e-6
    assert _relative(got, _fd_jacobian(model, X)) < 2e-3


def test_float64_input_gradient_is_cast_like_the_input() -> None:
    """The spec allows double X with float scores: the gradient graph casts across (CastLike)."""
    model = _classifier("SOFTMAX")
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    got = _graph_jacobian(model, X.astype(np.float64))
    want = _graph_jacobian(_classifier("SOFTMAX"), X)
    assert _relative(got, want) < 1e-5


def test_probit_and_one_row_binary_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedOpError, match="post_transform PROBIT"):
        build_vjp_model(_classifier("PROBIT"), "x", "y")
    node = helper.make_node("LinearClassifier", ["x"], ["label", "y"], domain=ML, coefficients=W[0].tolist(),
                            intercepts=[0.5], classlabels_ints=[0, 1], post_transform="LOGISTIC")
    with pytest.raises(UnsupportedOpError, match="one coefficient row"):
        build_vjp_model(_model([node], y_shape=["N", 2]), "x", "y")


def _audit(tmp_path: Path, model: str, *args: str) -> tuple[int, str, dict | None]:
    out = tmp_path / (Path(model).stem + ".json")
    result = CliRunner().invoke(main, ["audit", model, "--json", str(out), *args])
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.parametrize("name", ["sklearn_logreg", "sklearn_mlp"])
def test_zipmap_models_audit_like_their_tensor_twins(name: str, tmp_path: Path) -> None:
    zipmap, tensor = MODELS / f"{name}_zipmap.onnx", MODELS / f"{name}_tensor.onnx"
    if not zipmap.exists() or not tensor.exists():
        pytest.skip("tests/models not built")
    data = str(MODELS / "digits64.npy")
    code, output, document = _audit(tmp_path, str(zipmap), "--data", data, "--samples", "4", "--no-bounds")
    assert code == 0, output
    assert document["method"]["gradients"] == "graph"
    assert "ZipMap" in document["model"]["output"]["logits"]
    (tmp_path / "twin").mkdir()
    code, output, twin = _audit(tmp_path / "twin", str(tensor), "--data", data, "--samples", "4", "--no-bounds")
    assert code == 0, output
    got = [s["lambda_max"] for s in document["samples"]]
    want = [s["lambda_max"] for s in twin["samples"]]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_logistic_regression_logits_are_its_raw_scores() -> None:
    model = MODELS / "sklearn_logreg_zipmap.onnx"
    if not model.exists():
        pytest.skip("tests/models not built")
    selection = select_input_output(load_model(str(model)))
    assert selection.output_kind == "probabilities"
    assert "LinearClassifier" in selection.logits_transform and "post_transform NONE" in selection.logits_transform
    assert selection.extra_nodes and selection.extra_nodes[0].op_type == "LinearClassifier"


def _tree_model(path: Path) -> str:
    """A two-tree forest on 3 features (TreeEnsembleClassifier, probabilities), as skl2onnx emits."""
    node = helper.make_node(
        "TreeEnsembleClassifier", ["x"], ["label", "probabilities"], domain=ML,
        nodes_treeids=[0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 0, 1, 2], nodes_featureids=[0, 0, 0, 2, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"] * 2, nodes_values=[0.1, 0, 0, -0.2, 0, 0],
        nodes_truenodeids=[1, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 0, 0, 2, 0, 0],
        class_treeids=[0, 0, 0, 0, 1, 1, 1, 1], class_nodeids=[1, 1, 2, 2, 1, 1, 2, 2], class_ids=[0, 1] * 4,
        class_weights=[0.45, 0.05, 0.1, 0.4, 0.3, 0.2, 0.15, 0.35], classlabels_int64s=[0, 1],
    )
    graph = helper.make_graph(
        [node], "forest", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def test_tree_ensemble_audits_and_says_f_is_zero_almost_everywhere(tmp_path: Path) -> None:
    model = _tree_model(tmp_path / "forest.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32))
    code, output, document = _audit(tmp_path, model, "--data", str(data), "--no-bounds")
    assert code == 0, output
    assert document["method"]["gradients"] == "graph"
    assert "F = 0 almost everywhere" in document["method"]["gradients_note"]
    assert "TreeEnsembleClassifier" in document["method"]["gradients_note"]
    assert all(sample["lambda_max"] == 0.0 for sample in document["samples"])
    shown = CliRunner().invoke(main, ["inspect", model])
    assert shown.exit_code == 0 and "F = 0 almost everywhere" in shown.output


def _silero_like(path: Path) -> str:
    """Conv1d -> Sigmoid [N, 1, 1] -> ReduceMean over the last (length-1) axis -> [N, 1]."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"]),
        helper.make_node("Sigmoid", ["conv"], ["speech"]),
        helper.make_node("ReduceMean", ["speech", "axes"], ["mean"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "silero_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 1])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.normal(size=(1, 4, 1)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([0.1], np.float32), "b"), numpy_helper.from_array(np.array([2], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def test_mean_of_a_sigmoid_over_a_unit_axis_is_a_sigmoid_probability(tmp_path: Path) -> None:
    model = _silero_like(tmp_path / "head.onnx")
    selection = select_input_output(load_model(model))
    assert selection.output_kind == "sigmoid" and selection.logits_source == "conv"
    code, output, _ = _audit(tmp_path, model, "--samples", "3", "--no-bounds")
    assert code == 0, output


def test_inspect_describes_a_refused_model_then_exits_2_with_the_reason(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["score"])], "single",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.ones((3, 1), np.float32), "w")],
    )
    path = tmp_path / "single.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["inspect", str(path), "--json", str(tmp_path / "i.json")])
    assert result.exit_code == 2
    assert "ops:         MatMul 1" in result.output and "refused:" in result.output
    assert "--output-kind" in result.output
    document = json.loads((tmp_path / "i.json").read_text())
    assert "selection" not in document and "cannot tell a probability" in document["refusal"]["reason"]
