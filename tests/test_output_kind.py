"""--output-kind: the user says what the output is when the graph cannot tell (issue 16 item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fimaudit.cli import main

RNG = np.random.default_rng(11)
W1 = RNG.normal(size=(4, 1)).astype(np.float32)
W10 = RNG.normal(size=(4, 10)).astype(np.float32)


def _save(path: Path, nodes, width: int, weights: dict[str, np.ndarray]) -> str:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def _single_logit(tmp_path: Path) -> str:
    return _save(tmp_path / "logit.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])], 1, {"w": W1})


def _sigmoid_by_hand(tmp_path: Path) -> str:
    """q = 1 / (1 + exp(-x w)) without a Sigmoid node: fimaudit cannot tell it is a probability."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Neg", ["s"], ["ns"]),
        helper.make_node("Exp", ["ns"], ["e"]), helper.make_node("Add", ["e", "one"], ["d"]),
        helper.make_node("Reciprocal", ["d"], ["y"]),
    ]
    return _save(tmp_path / "hand.onnx", nodes, 1, {"w": W1, "one": np.array(1.0, np.float32)})


def _sigmoid_node(tmp_path: Path) -> str:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Sigmoid", ["s"], ["y"])]
    return _save(tmp_path / "sigmoid.onnx", nodes, 1, {"w": W1})


def _ten_probabilities(tmp_path: Path) -> str:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    return _save(tmp_path / "ten.onnx", nodes, 10, {"w": W10})


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _audit(tmp_path: Path, model: str, *args: str) -> dict:
    out = tmp_path / (Path(model).stem + "".join(args).replace("-", "") + ".json")
    result = _run("audit", model, "--samples", "4", "--no-bounds", "--json", str(out), *args)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_a_single_score_is_refused_without_a_kind_and_the_message_names_the_option(tmp_path: Path) -> None:
    result = _run("audit", _single_logit(tmp_path), "--samples", "2")
    assert result.exit_code == 2 and "--output-kind" in result.output


def test_logits_on_a_single_score_is_a_binary_logit(tmp_path: Path) -> None:
    document = _audit(tmp_path, _single_logit(tmp_path), "--output-kind", "logits")
    assert document["model"]["output"]["kind"] == "sigmoid"
    assert "single logit" in document["model"]["output"]["logits"]
    assert document["method"]["gradients"] == "graph"


def test_sigmoid_without_a_sigmoid_node_equals_the_sigmoid_model(tmp_path: Path) -> None:
    by_hand = _audit(tmp_path, _sigmoid_by_hand(tmp_path), "--output-kind", "sigmoid")
    reference = _audit(tmp_path, _sigmoid_node(tmp_path))
    assert "log q - log(1 - q)" in by_hand["model"]["output"]["logits"]
    got = [s["lambda_max"] for s in by_hand["samples"]]
    want = [s["lambda_max"] for s in reference["samples"]]
    np.testing.assert_allclose(got, want, rtol=1e-4)  # float32 logit of a float32 probability


def test_sigmoid_on_a_sigmoid_model_uses_the_pre_sigmoid_score(tmp_path: Path) -> None:
    document = _audit(tmp_path, _sigmoid_node(tmp_path), "--output-kind", "sigmoid")
    assert "pre-sigmoid score" in document["model"]["output"]["logits"]


def test_logits_kind_is_kept_on_an_output_that_looks_like_probabilities(tmp_path: Path) -> None:
    model = _ten_probabilities(tmp_path)
    given = _audit(tmp_path, model, "--output-kind", "logits")
    assert given["model"]["output"]["kind"] == "logits"
    assert "--output-kind logits" in given["model"]["output"]["logits"]
    probabilities = _audit(tmp_path, model, "--output-kind", "probabilities")
    assert probabilities["model"]["output"]["logits"].startswith("input of the final Softmax")


@pytest.mark.parametrize(
    ("builder", "kind", "message"),
    [(_ten_probabilities, "sigmoid", "needs one score per sample"), (_single_logit, "probabilities", "needs at least two classes")],
)
@pytest.mark.parametrize("command", ["audit", "inspect", "jacobian", "compare"])
def test_a_kind_that_does_not_fit_is_one_line_and_exit_2(tmp_path: Path, builder, kind: str, message: str, command: str) -> None:
    model = builder(tmp_path)
    data = tmp_path / "x.npy"
    np.save(data, RNG.normal(size=(2, 4)).astype(np.float32))
    extra = {"jacobian": ["--data", str(data), "--out", str(tmp_path / "j.npy")], "compare": [model, "--samples", "2"]}
    result = _run(command, model, "--output-kind", kind, *extra.get(command, []))
    assert result.exit_code == 2, result.output
    assert message in result.output
    if command in ("audit", "jacobian"):
        assert len(result.output.strip().splitlines()) == 1, result.output
    else:  # inspect prints the description first, compare a warning per model: the reason comes last
        assert result.output.strip().splitlines()[-1].startswith("fimaudit: error:")
