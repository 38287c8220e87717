"""The fused Gram model (autodiff/fused_gram.py): J J^T u in one run, the same values as vjp then jvp."""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.autodiff import fused_gram
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
