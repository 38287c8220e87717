"""The fused Gram model (autodiff/fused_gram.py): J J^T u in one run, the same values as vjp then jvp."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from fimaudit.autodiff import fused_gram, patch_gram
from fimaudit.gradients import base
from fimaudit.gradients import graph as graph_gradients


def _source(name: str):
    from fimaudit.audit import AuditConfig, intake, prepare_model
    from fimaudit.gradients import make_source

    path = f"sample_models/{name}"
    data = np.load("sample_models/digits_test.npy")[:2].astype(np.float32)
    prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), data[:1])
    source = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    return source, data


@pytest.mark.parametrize("name", ["vit_small.onnx", "resnet_small.onnx"])
def test_one_run_per_product_with_the_values_of_vjp_then_jvp(name: str) -> None:
    source, data = _source(name)
    cotangents = np.random.default_rng(0).normal(size=(3, source.num_classes))
    for sample in data:
        base.expect_products(source, sample)
        separate = source.jvp(sample, source.vjp(sample, cotangents))
        source.gram_product(sample, cotangents)  # the fused session is made on the first call
        runs, evaluations = source.accounting.runs, source.accounting.evaluations
        fused = source.gram_product(sample, cotangents)
        assert fused is not None
        # One run for all three rows, counted as a vjp and a jvp of three rows each.
        assert (source.accounting.runs - runs, source.accounting.evaluations - evaluations) == (1, 6)
        np.testing.assert_allclose(fused, separate, rtol=1e-5, atol=1e-6 * np.abs(separate).max())
        # The fused product is J J^T: symmetric, positive semi-definite on the cotangents.
        gram = source.gram_product(sample, np.eye(source.num_classes))
        np.testing.assert_allclose(gram, gram.T, rtol=1e-4, atol=1e-6 * np.abs(gram).max())
        assert np.linalg.eigvalsh((gram + gram.T) / 2).min() > -1e-5 * np.abs(gram).max()


def test_large_weights_make_no_fused_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_gram, "MAX_FUSED_WEIGHT_BYTES", 0)
    source, data = _source("vit_small.onnx")
    base.expect_products(source, data[0])
    source.jvp(data[0], np.ones((1, source.input_size)))
    assert source.gram_product(data[0], np.ones((1, source.num_classes))) is None


def test_wrappers_that_change_the_jacobian_do_not_pass_the_product_on() -> None:
    from fimaudit.embedding_mask import MaskedSource
    from fimaudit.pixel_space import PixelSpaceJacobian

    source, data = _source("vit_small.onnx")
    u = np.ones((1, source.num_classes))
    assert isinstance(source, graph_gradients.GraphJacobian)
    base.expect_products(source, data[0])
    direct = source.gram_product(data[0], u)
    guarded = base.gram_product(base.FiniteDerivatives(source, 0), data[0], u)  # the NaN guard passes it on
    assert direct is not None and guarded is not None
    np.testing.assert_array_equal(guarded, direct)
    assert base.gram_product(object.__new__(PixelSpaceJacobian), data[0], u) is None
    assert base.gram_product(object.__new__(MaskedSource), data[0], u) is None


def test_the_cost_meter_counts_a_fused_product_as_a_vjp_and_a_jvp() -> None:
    from fimaudit.fisher.operator import CostMeter
    from fimaudit.fisher.problem import SampleProblem

    source, data = _source("vit_small.onnx")
    logits = source.logits(data[:1])[0]
    meter = CostMeter(SampleProblem(sample=data[0], logits=logits, jacobian=source))
    u = np.random.default_rng(1).normal(size=(2, source.num_classes))
    first = meter.gram(u)
    second = meter.gram(u)
    assert (meter.vjp_rows, meter.jvp_rows) == (4, 4)
    np.testing.assert_allclose(first, second, rtol=1e-6)
    np.testing.assert_allclose(first, source.jvp(data[0], source.vjp(data[0], u)), rtol=1e-5,
                               atol=1e-6 * np.abs(first).max())


def _half(seed: str, kept: str, result: str):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", [seed, kept], [result])], "half",
        [helper.make_tensor_value_info(seed, TensorProto.FLOAT, ["M", 1, 3]),
         helper.make_tensor_value_info(kept, TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info(result, TensorProto.FLOAT, ["M", 1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _split(seed: str, kept: str, result: str):
    from fimaudit.autodiff.kept_forward import SplitGradientModel

    return SplitGradientModel(_half(seed, kept, result), _half(seed, kept, result), (kept,), (), ())


def test_the_halves_are_wired_through_the_vjp_result_and_names_that_would_meet_refuse_fusion() -> None:
    from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, OUTPUT_TANGENT, TANGENT
    from tests.autodiff.test_rules import _ort

    vjp, jvp = _split(COTANGENT, "s", INPUT_GRAD), _split(TANGENT, "t", OUTPUT_TANGENT)
    fused = fused_gram.fuse_gram(vjp, jvp, INPUT_GRAD, TANGENT, OUTPUT_TANGENT)
    assert fused is not None
    rng = np.random.default_rng(2)
    u, s, t = rng.normal(size=(2, 1, 3)).astype(np.float32), *rng.normal(size=(2, 1, 3)).astype(np.float32)
    (out,) = _ort(fused.model).run([fused.result], {COTANGENT: u, "s": s, fused.jvp_inputs["t"]: t})
    np.testing.assert_allclose(out, u * s * t, rtol=1e-6)  # the JVP half's tangent is the VJP's result
    # A model that names a tensor with the prefix itself: the renamed JVP tensor would meet it.
    clashing = _split(COTANGENT, fused_gram.PREFIX + "t", INPUT_GRAD)
    assert fused_gram.fuse_gram(clashing, jvp, INPUT_GRAD, TANGENT, OUTPUT_TANGENT) is None


def test_a_patch_embedding_gram_is_folded_with_the_values_of_vjp_then_jvp() -> None:
    """The sample ViT's 2x2 stride-2 patch Conv: ConvTranspose then Conv become one 1x1 Conv by W W^T."""
    source, data = _source("vit_small.onnx")
    cotangents = np.random.default_rng(3).normal(size=(4, source.num_classes))
    for sample in data:
        base.expect_products(source, sample)
        separate = source.jvp(sample, source.vjp(sample, cotangents))
        fused = source.gram_product(sample, cotangents)
        np.testing.assert_allclose(fused, separate, rtol=1e-5, atol=1e-6 * np.abs(separate).max())
    _, gram = source._gram
    assert gram.folded
    ops = [node.op_type for node in gram.model.graph.node]
    assert "ConvTranspose" not in ops and "patch.weight" not in {tensor.name for tensor in gram.weights}
    weight = next(tensor for tensor in gram.weights if tensor.name == patch_gram.FOLD_PREFIX + "weight")
    assert list(weight.dims) == [32, 32, 1, 1]


def test_an_overlapping_first_conv_is_not_folded() -> None:
    source, data = _source("resnet_small.onnx")
    base.expect_products(source, data[0])
    assert source.gram_product(data[0], np.ones((1, source.num_classes))) is not None
    assert not source._gram[1].folded


def test_a_fold_that_disagrees_with_vjp_then_jvp_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong W W^T (here doubled) is caught by the first product's comparison; the products stay right."""
    real = fused_gram.fold_patch_gram

    def doubled(*args, **kwargs):
        folded = real(*args, **kwargs)
        assert folded is not None
        model, weight = folded
        values = 2 * numpy_helper.to_array(weight)
        return model, numpy_helper.from_array(values, weight.name)

    monkeypatch.setattr(fused_gram, "fold_patch_gram", doubled)
    source, data = _source("vit_small.onnx")
    base.expect_products(source, data[0])
    cotangents = np.random.default_rng(4).normal(size=(2, source.num_classes))
    separate = source.jvp(data[0], source.vjp(data[0], cotangents))
    runs = source.accounting.runs
    fused = source.gram_product(data[0], cotangents)
    assert not source._gram[1].folded
    assert source.accounting.runs - runs == 1  # the comparison's runs are not the audit's
    np.testing.assert_allclose(fused, separate, rtol=1e-5, atol=1e-6 * np.abs(separate).max())


def _patch_pair(extra_reader: str | None):
    """A hand-made fused graph: g -> ConvTranspose(W) -> Reshape -> r; r -> Reshape -> Conv(W) -> y."""
    from onnx import TensorProto, helper

    weight = numpy_helper.from_array(np.random.default_rng(5).normal(size=(4, 2, 2, 2)).astype(np.float32), "W")
    ints = numpy_helper.from_array(np.array([1, 1, 2, 4, 4], dtype=np.int64), "to5")
    flat = numpy_helper.from_array(np.array([1, 2, 4, 4], dtype=np.int64), "to4")
    nodes = [
        helper.make_node("ConvTranspose", ["g", "W"], ["x"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["x", "to5"], ["r"]),
        helper.make_node("Shape", ["r"], ["r_shape"]),
        helper.make_node("Reshape", ["r", "to4"], ["r4"]),
        helper.make_node("Conv", ["r4", "W"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Cast", ["r_shape"], ["r_shape_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["r_shape_f"], ["total"], keepdims=0),
        helper.make_node("Mul", ["c", "total"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])]
    if extra_reader == "neg":
        nodes.append(helper.make_node("Neg", ["x"], ["x_neg"]))
        outputs.append(helper.make_tensor_value_info("x_neg", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "pair",
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 4, 2, 2]),
         helper.make_tensor_value_info("seed", TensorProto.FLOAT, [1, 1, 3])],
        outputs, [ints, flat],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"W": weight}


def test_the_fold_is_exact_on_a_hand_made_pair_and_refused_when_the_adjoint_has_another_reader() -> None:
    from tests.autodiff.test_rules import _ort

    model, weights = _patch_pair(None)
    rng = np.random.default_rng(6)
    feeds = {"g": rng.normal(size=(1, 4, 2, 2)).astype(np.float32), "seed": np.zeros((1, 1, 3), np.float32)}
    with_weights = onnx_with(model, weights)
    (expected,) = _ort(with_weights).run(["y"], feeds)
    folded = patch_gram.fold_patch_gram(model, weights, "r", "seed", (2, 4, 4))
    assert folded is not None
    model, gram = folded
    assert [node.op_type for node in model.graph.node].count("ConvTranspose") == 0
    (out,) = _ort(onnx_with(model, {**weights, gram.name: gram})).run(["y"], feeds)
    np.testing.assert_allclose(out, expected, rtol=1e-5)  # the Shape of r read from [M, B] and the sample dims
    other, weights = _patch_pair("neg")
    assert patch_gram.fold_patch_gram(other, weights, "r", "seed", (2, 4, 4)) is None


def onnx_with(model, weights):
    """``model`` with ``weights`` as its initializers (what create_session does on the wire)."""
    import copy

    whole = copy.deepcopy(model)
    names = {tensor.name for tensor in whole.graph.initializer}
    whole.graph.initializer.extend(tensor for name, tensor in weights.items() if name not in names)
    return whole


def test_a_folded_model_that_onnx_runtime_refuses_gives_way_to_the_unfolded_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fimaudit.errors import ModelError

    real = graph_gradients.create_session

    def refusing(model, *args, **kwargs):
        if any(node.name.startswith(patch_gram.FOLD_PREFIX) for node in model.graph.node):
            raise ModelError("ONNX Runtime cannot load the model: refused for the test")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(graph_gradients, "create_session", refusing)
    source, data = _source("vit_small.onnx")
    base.expect_products(source, data[0])
    cotangents = np.random.default_rng(7).normal(size=(2, source.num_classes))
    separate = source.jvp(data[0], source.vjp(data[0], cotangents))
    fused = source.gram_product(data[0], cotangents)
    assert fused is not None and not source._gram[1].folded
    np.testing.assert_allclose(fused, separate, rtol=1e-5, atol=1e-6 * np.abs(separate).max())


def test_a_model_using_the_folds_names_is_not_folded() -> None:
    model, weights = _patch_pair(None)
    model.graph.node[-1].output[0] = patch_gram.FOLD_PREFIX + "weight"
    model.graph.output[0].name = patch_gram.FOLD_PREFIX + "weight"
    assert patch_gram.fold_patch_gram(model, weights, "r", "seed", (2, 4, 4)) is None
    renamed, weights = _patch_pair(None)
    assert patch_gram.fold_patch_gram(renamed, weights, "r", "seed", (2, 4, 4)) is not None
