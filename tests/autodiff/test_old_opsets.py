"""Opset 7-9 models (every Caffe2-era model-zoo graph): gradient graphs that ONNX Runtime runs.

The rules emit opset-11 forms (Slice/Pad with inputs, Range, GatherElements, Equal on floats);
``build.at_gradient_opset`` converts older models with onnx.version_converter first and says so.
Checked per opset: the whole-graph VJP/JVP in float64 (onnx's ReferenceEvaluator) against central
finite differences of the *original* model and the adjoint identity, ONNX Runtime float32 against
that, the InputJacobian used by audits, and a CLI audit with ``--gradients graph``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.autodiff.build import COTANGENT, TANGENT, build_jvp_model, build_vjp_model
from fimaudit.autodiff.context import GraphFacts, RuleContext
from fimaudit.cli import main
from fimaudit.errors import UnsupportedOpError
from tests.autodiff.reference_ops import EXACT_OPS

OPSETS = [7, 8, 9]
X_SHAPE = (2, 3, 6, 6)  # 6x6: onnx.reference GatherElements (np.choose) takes at most 64 positions
CLASSES = 5


def zoo_model(opset: int, dtype: type = np.float32) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool, a 1x1 Conv with Dropout, Add/Sum, Average/GlobalAveragePool,
    Flatten and Reshape (opset-5 form with a 0 entry), Concat, Gemm, Softmax: logits are 'logits'."""
    rng = np.random.default_rng(opset)

    def w(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) * 0.3).astype(dtype)

    weights = {
        "w1": w(4, 3, 3, 3), "b1": w(4), "scale": (np.abs(w(4)) + 0.5).astype(dtype), "shift": w(4),
        "mean": w(4), "var": (np.abs(w(4)) + 0.5).astype(dtype), "w2": w(4, 4, 1, 1),
        "g": w(CLASSES, 4 * 2 * 2 + 4), "gb": w(CLASSES), "target": np.array([0, -1], np.int64),
    }
    make = helper.make_node
    nodes = [
        make("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        make("BatchNormalization", ["c1", "scale", "shift", "mean", "var"], ["bn"], **({"spatial": 1} if opset < 9 else {})),
        make("Relu", ["bn"], ["r"]),
        make("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        make("Conv", ["mp", "w2"], ["c2"]),
        make("Dropout", ["c2"], ["d"]),
        make("Add", ["d", "mp"], ["a"]),
        make("Sum", ["a", "mp", "d"], ["s"]),
        make("AveragePool", ["s"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
        make("GlobalAveragePool", ["s"], ["gap"]),
        make("Flatten", ["ap"], ["f1"], axis=1),
        make("Reshape", ["gap", "target"], ["f2"]),
        make("Concat", ["f1", "f2"], ["cat"], axis=1),
        make("Gemm", ["cat", "g", "gb"], ["logits"], transB=1),
        make("Softmax", ["logits"], ["y"]),
    ]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    # IR 3 (as Caffe2-era exports): every initializer is also listed as a graph input.
    listed = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape) for name, value in weights.items()]
    graph = helper.make_graph(
        nodes, f"zoo_opset{opset}",
        [helper.make_tensor_value_info("x", elem, ["N", *X_SHAPE[1:]]), *listed],
        [helper.make_tensor_value_info("y", elem, ["N", CLASSES])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="caffe2-like")
    model.ir_version = 3
    onnx.checker.check_model(model, full_check=True)
    return model


def _away_from_kinks(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=X_SHAPE)


@pytest.mark.parametrize("opset", OPSETS)
def test_opset_below_10_gradients_against_finite_differences(opset: int, caplog) -> None:
    rng = np.random.default_rng(100 + opset)
    model64 = zoo_model(opset, np.float64)
    x = _away_from_kinks(rng)
    forward = ReferenceEvaluator(model64, new_ops=EXACT_OPS)
    (logits,) = forward.run(["logits"], {"x": x})
    lead = 3
    u = rng.normal(size=(lead, *logits.shape))
    v = rng.normal(size=(lead, *X_SHAPE))

    with caplog.at_level(logging.WARNING, logger="fimaudit.autodiff.build"):
        vjp, jvp = build_vjp_model(model64, "x", "logits"), build_jvp_model(model64, "x", "logits")
    assert f"opset {opset} converted to opset 11" in caplog.text  # said, not silent
    for gradient_model in (vjp, jvp):
        onnx.checker.check_model(gradient_model, full_check=True)
    pulled = ReferenceEvaluator(vjp, new_ops=EXACT_OPS).run(None, {"x": x, COTANGENT: u})[-1]
    pushed = ReferenceEvaluator(jvp, new_ops=EXACT_OPS).run(None, {"x": x, TANGENT: v})[-1]
    left = (u * pushed).reshape(lead, -1).sum(axis=1)
    right = (pulled * v).reshape(lead, -1).sum(axis=1)
    np.testing.assert_allclose(left, right, rtol=1e-9)

    h = 1e-6
    differences = np.stack([
        (forward.run(["logits"], {"x": x + h * v[m]})[0] - forward.run(["logits"], {"x": x - h * v[m]})[0]) / (2 * h)
        for m in range(lead)
    ])
    assert np.linalg.norm(pushed - differences) / np.linalg.norm(differences) < 1e-6

    # ONNX Runtime, float32: the sessions load (the opset-10 Slice used to be rejected) and agree.
    model32 = zoo_model(opset, np.float32)
    x32 = x.astype(np.float32)
    sessions = [ort.InferenceSession(build(model32, "x", "logits").SerializeToString(), providers=["CPUExecutionProvider"]) for build in (build_vjp_model, build_jvp_model)]
    pulled32 = sessions[0].run(None, {"x": x32, COTANGENT: u.astype(np.float32)})[-1]
    pushed32 = sessions[1].run(None, {"x": x32, TANGENT: v.astype(np.float32)})[-1]
    assert np.linalg.norm(pulled32 - pulled) / np.linalg.norm(pulled) < 1e-4
    assert np.linalg.norm(pushed32 - pushed) / np.linalg.norm(pushed) < 1e-4


def _facts(opset: int) -> GraphFacts:
    return GraphFacts(shapes={}, elem_types={}, constants={}, differentiable=set(), opset=opset)


def test_slice_helper_uses_the_attribute_form_before_opset_10() -> None:
    ctx = RuleContext(_facts(9), "vjp", "seed")
    ctx.slice("t", [0], [1], [0])
    (node,) = ctx.nodes
    assert list(node.input) == ["t"]
    assert {a.name: list(a.ints) for a in node.attribute} == {"starts": [0], "ends": [1], "axes": [0]}
    with pytest.raises(UnsupportedOpError, match="steps other than 1 need opset 10"):
        ctx.slice("t", [0], [5], [0], [2])
    with pytest.raises(UnsupportedOpError, match="computed at run time"):
        ctx.slice("t", "runtime_starts", [5], [0])
    at10 = RuleContext(_facts(10), "vjp", "seed")
    at10.slice("t", [0], [1], [0])
    assert len(at10.nodes[0].input) == 4 and not at10.nodes[0].attribute


def test_emitting_an_op_newer_than_the_opset_names_op_and_opset() -> None:
    ctx = RuleContext(_facts(7), "vjp", "seed")
    with pytest.raises(UnsupportedOpError, match="Expand, which does not exist at the model's opset 7") as info:
        ctx.emit("Expand", ["a", "b"])
    assert info.value.missing_ops == ["Expand"]
    RuleContext(_facts(8), "vjp", "seed").emit("Expand", ["a", "b"])  # exists from opset 8


@pytest.mark.parametrize("opset", [7, 9])
def test_cli_audit_of_an_opset_below_10_model_uses_the_gradient_graph(opset: int, tmp_path) -> None:
    path = tmp_path / f"zoo{opset}.onnx"
    onnx.save(zoo_model(opset), path)
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(3).normal(size=(3, *X_SHAPE[1:])).astype(np.float32))
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(main, ["audit", str(path), "--data", str(data), "--samples", "3", "--gradients", "graph", "--json", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["method"]["gradients"] == "graph"
    assert len(document["samples"]) == 3
    assert all(sample["lambda_max"] > 0 for sample in document["samples"])
