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


def _mask(x: np.ndarray, w1: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The ReLU's 0/1 mask per sample, in float64."""
    return (x.astype(np.float64) @ w1.T.astype(np.float64) + bias > 0).astype(np.float64)


def _expected(x: np.ndarray, v: np.ndarray, w1: np.ndarray, w2: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """J v per tangent row and sample: W2 diag(h > 0) W1 v."""
    return np.einsum("kn,bn,nd,mbd->mbk", w2.astype(np.float64), _mask(x, w1, bias), w1.astype(np.float64), v)


def _expected_pull(x: np.ndarray, u: np.ndarray, w1: np.ndarray, w2: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """J^T u per cotangent row and sample: W1^T diag(h > 0) W2^T u."""
    return np.einsum("mbk,kn,bn,nd->mbd", u, w2.astype(np.float64), _mask(x, w1, bias), w1.astype(np.float64))


@pytest.fixture
def every_weight(monkeypatch):
    monkeypatch.setattr(masked_rows, "MIN_WEIGHT_BYTES", 0)


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], output: str = OUTPUT_TANGENT) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([output], feeds)[0]


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


@pytest.mark.parametrize("dead", [False, True], ids=["some-rows-survive", "a-mask-zero-everywhere"])
def test_a_vjp_model_for_products_skips_the_rows_too(every_weight, dead) -> None:
    """J^T u = W1^T diag(mask) W2^T u from the rows that survive; the plain VJP model keeps W1 whole."""
    from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, build_vjp_model

    rng = np.random.default_rng(3)
    bias = np.full(N, -1e3) if dead else rng.normal(size=N)
    x, u = rng.normal(size=(3, D)), rng.normal(size=(4, 3, K))
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        model, w1, w2 = _network(dtype, bias)
        products = build_vjp_model(model, "x", "y", skip_masked_rows=True)
        plain = build_vjp_model(model, "x", "y")
        assert masked_rows.rewritten(products) == 1 and masked_rows.rewritten(plain) == 0
        assert any(node.op_type == "Gather" and node.input[0] == "w1" for node in products.graph.node)
        feeds = {"x": x.astype(dtype), COTANGENT: u.astype(dtype)}
        expected = _expected_pull(x, u, w1, w2, bias)
        if dtype is np.float64:
            (actual,) = ReferenceEvaluator(products).run([INPUT_GRAD], feeds)
        else:
            actual = _ort_run(products, feeds, INPUT_GRAD)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max()))


def test_a_models_own_count_property_is_replaced() -> None:
    model, _, _ = _network(np.float32, np.zeros(N))
    model.metadata_props.add(key=masked_rows.COUNT_KEY, value="7")
    assert masked_rows.rewritten(build_jvp_model(model, "x", "y")) == 0


def _graph_source(path: str, data: np.ndarray):
    from fimaudit.audit import AuditConfig, intake, prepare_model
    from fimaudit.gradients import make_source

    prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), data[:1])
    return make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source


def test_products_after_the_hint_skip_rows_in_both_modes_and_agree(every_weight, tmp_path) -> None:
    """The graph source's VJP is replaced by the products model, sharing one forward half with the JVP."""
    from fimaudit.gradients import graph as graph_gradients
    from fimaudit.gradients.base import expect_products

    bias = np.random.default_rng(4).normal(size=N)
    model, w1, w2 = _network(np.float32, bias)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    data = np.random.default_rng(5).normal(size=(3, D)).astype(np.float32)
    source = _graph_source(str(path), data)
    first = source._vjp
    rng = np.random.default_rng(6)
    u, v = rng.normal(size=(2, K)), rng.normal(size=(2, D))
    jacobians = []
    for sample in data:
        mask = _mask(sample[None], w1, bias.astype(np.float32))[0]
        jacobian = w2.astype(np.float64) @ (mask[:, None] * w1.astype(np.float64))
        jacobians.append(jacobian)
        expect_products(source, sample)
        assert source._vjp is not first and source._vjp.forward is source._jvp_kept.forward
        assert any(node.op_type == "Gather" for node in source._vjp.split.forward.graph.node)
        pulled, pushed = source.vjp(sample, u), source.jvp(sample, v)
        np.testing.assert_allclose(pulled, u @ jacobian, rtol=1e-5, atol=1e-5 * np.abs(pulled).max())
        np.testing.assert_allclose(pushed, v @ jacobian.T, rtol=1e-5, atol=1e-5 * np.abs(pushed).max())
    dense = source.dense(data)
    np.testing.assert_allclose(dense, np.stack(jacobians), rtol=1e-5, atol=1e-5 * np.abs(dense).max())
    assert isinstance(source, graph_gradients.GraphJacobian)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_the_rewrites_run_on_onnx_runtime_at_every_form_of_their_ops(every_weight, opset) -> None:
    """ReduceMax and Gemm change form across opsets (axes as an input from 18): both modes run."""
    from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, build_vjp_model

    model, w1, w2 = _network(np.float32, np.zeros(N))
    model.opset_import[0].version = opset
    rng = np.random.default_rng(7)
    x, v, u = rng.normal(size=(2, D)), rng.normal(size=(3, 2, D)), rng.normal(size=(3, 2, K))
    jacobian_rows = _expected(x, v, w1, w2, np.zeros(N))
    pulled = _expected_pull(x, u, w1, w2, np.zeros(N))
    jvp, vjp = build_jvp_model(model, "x", "y"), build_vjp_model(model, "x", "y", skip_masked_rows=True)
    assert masked_rows.rewritten(jvp) == masked_rows.rewritten(vjp) == 1
    feeds = {"x": x.astype(np.float32), TANGENT: v.astype(np.float32)}
    np.testing.assert_allclose(_ort_run(jvp, feeds), jacobian_rows, rtol=1e-5, atol=1e-5 * np.abs(jacobian_rows).max())
    actual = _ort_run(vjp, {"x": x.astype(np.float32), COTANGENT: u.astype(np.float32)}, INPUT_GRAD)
    np.testing.assert_allclose(actual, pulled, rtol=1e-5, atol=1e-5 * np.abs(pulled).max())
