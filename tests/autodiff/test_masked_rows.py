"""J v skips the weight rows a ReLU mask zeroes (autodiff/masked_rows.py), and gives the same J v.

A Gemm -> ReLU -> Gemm network (the weight limit lowered so that a small first weight counts):
the JVP graph has the rewrite (a ScatterElements; no product reads the whole transposed weight),
its forward half gathers the rows, and J v equals W2 diag(mask) W1 v computed in numpy and the
unrewritten graph's, on ONNX Runtime (float32) and onnx's reference evaluator (float64): with
masks that differ between the rows of a batch (their union survives), with a sample whose mask
is zero everywhere (no row survives), with several tangents at once. Below the limit nothing is
rewritten.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.autodiff import masked_rows
from fimaudit.autodiff.build import OUTPUT_TANGENT, TANGENT, build_jvp_model
from fimaudit.autodiff.kept_forward import split_gradient_model

D, N, K = 12, 9, 4


def _network(dtype: type, bias: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(N, D)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", elem, ["batch", D])],
        [helper.make_tensor_value_info("y", elem, ["batch", K])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(bias.astype(dtype), "b1")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w1, w2


def _expected(x: np.ndarray, v: np.ndarray, w1: np.ndarray, w2: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """J v per tangent row and sample: W2 diag(h > 0) W1 v."""
    mask = (x.astype(np.float64) @ w1.T.astype(np.float64) + bias > 0).astype(np.float64)
    return np.einsum("kn,bn,nd,mbd->mbk", w2.astype(np.float64), mask, w1.astype(np.float64), v)


@pytest.fixture
def every_weight(monkeypatch):
    monkeypatch.setattr(masked_rows, "MIN_WEIGHT_BYTES", 0)


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_TANGENT], feeds)[0]


@pytest.mark.parametrize("dead", [False, True], ids=["some-rows-survive", "a-mask-zero-everywhere"])
def test_products_over_the_surviving_rows_equal_the_full_product(every_weight, monkeypatch, dead) -> None:
    rng = np.random.default_rng(1)
    bias = rng.normal(size=N)
    x = rng.normal(size=(3, D))
    if dead:
        bias = np.full(N, -1e3)  # every unit off in every sample: no row survives
    v = rng.normal(size=(5, 3, D))
    for dtype, run, rtol in ((np.float64, "reference", 1e-12), (np.float32, "ort", 1e-5)):
        model, w1, w2 = _network(dtype, bias)
        rewritten = build_jvp_model(model, "x", "y")
        ops = [node.op_type for node in rewritten.graph.node]
        assert "ScatterElements" in ops and "Gather" in ops
        feeds = {"x": x.astype(dtype), TANGENT: v.astype(dtype)}
        if run == "reference":
            (actual,) = ReferenceEvaluator(rewritten).run([OUTPUT_TANGENT], feeds)
        else:
            actual = _ort_run(rewritten, feeds)
        expected = _expected(x.astype(dtype), v.astype(dtype), w1, w2, bias.astype(dtype))
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max()))
        if dead:
            assert not np.any(actual)
    monkeypatch.setattr(masked_rows, "MIN_WEIGHT_BYTES", 1 << 60)
    model, _, _ = _network(np.float32, bias)
    plain = build_jvp_model(model, "x", "y")
    assert "ScatterElements" not in [node.op_type for node in plain.graph.node]
    feeds = {"x": x.astype(np.float32), TANGENT: v.astype(np.float32)}
    np.testing.assert_allclose(_ort_run(rewritten, feeds), _ort_run(plain, feeds), rtol=1e-5, atol=1e-5)


def test_masks_that_differ_between_samples_keep_the_union_of_their_rows(every_weight) -> None:
    rng = np.random.default_rng(2)
    bias = np.zeros(N)
    x = rng.normal(size=(2, D))
    model, w1, w2 = _network(np.float64, bias)
    masks = x @ w1.T > 0
    assert np.any(masks[0] != masks[1]) and not np.all(masks.any(axis=0))  # the rows differ; some are off in both
    v = rng.normal(size=(2, 2, D))
    (actual,) = ReferenceEvaluator(build_jvp_model(model, "x", "y")).run([OUTPUT_TANGENT], {"x": x, TANGENT: v})
    np.testing.assert_allclose(actual, _expected(x, v, w1, w2, bias), rtol=1e-12, atol=1e-12)


def test_the_forward_half_gathers_the_rows_and_the_gradient_half_reads_only_them(every_weight) -> None:
    model, _, _ = _network(np.float32, np.zeros(N))
    split = split_gradient_model(build_jvp_model(model, "x", "y"), TANGENT, OUTPUT_TANGENT, "y")
    assert split is not None
    gathers = [node for node in split.forward.graph.node if node.op_type == "Gather" and node.input[0] == "w1"]
    assert gathers, "the rows of w1 are not gathered in the forward half"
    assert gathers[0].output[0] in split.kept
    assert not any("w1" in node.input for node in split.gradient.graph.node)


def test_small_weights_keep_the_plain_product() -> None:
    model, _, _ = _network(np.float32, np.zeros(N))
    assert "ScatterElements" not in [node.op_type for node in build_jvp_model(model, "x", "y").graph.node]
