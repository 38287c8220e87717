"""The split gradient models (autodiff/kept_forward.py) compute what the combined ones compute.

Every case of the gradient-rule table (tests/autodiff/cases_*.py), float64 on onnx's reference
evaluator: the VJP and JVP models split into their forward half and gradient half, the halves
run one after the other, and the gradient equals the combined model's to 1e-12; the forward half
holds no node that reads the seed, the gradient half none that reads a data input directly.
Then through ``GraphJacobian`` on ONNX Runtime: the forward half runs once per sample however
many products follow, and products equal the combined model's.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, OUTPUT_TANGENT, TANGENT, build_jvp_model, build_vjp_model
from fimaudit.autodiff.kept_forward import split_gradient_model
from fimaudit.gradients import graph as graph_gradients
from tests.autodiff.reference_ops import EXACT_OPS
from tests.autodiff.test_rules import CASES, LEAD, _ort


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    return ReferenceEvaluator(model, new_ops=EXACT_OPS).run(outputs, feeds)


def _check_split(model: onnx.ModelProto, seed: str, result: str, x: np.ndarray, seeds: np.ndarray) -> None:
    split = split_gradient_model(model, seed, result, "y")
    assert split is not None, "the split could not type a kept tensor"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        pass  # a model the checker refuses already (an ML-domain output without a shape) proves nothing
    else:
        onnx.checker.check_model(split.complete("forward"))
        onnx.checker.check_model(split.complete("gradient"))
    assert seed not in {name for node in split.forward.graph.node for name in node.input}
    gradient_inputs = {value.name for value in split.gradient.graph.input}
    assert "x" not in gradient_inputs or "x" in split.kept
    assert gradient_inputs == {seed, *split.kept}

    y, expected = _run(model, {"x": x, seed: seeds}, ["y", result])
    names = [value.name for value in split.forward.graph.output]
    values = {"x": x, **dict(zip(names, _run(split.complete("forward"), {"x": x}, names), strict=True))}
    np.testing.assert_array_equal(values["y"], y)
    (actual,) = _run(split.complete("gradient"), {seed: seeds, **{name: values[name] for name in split.kept}}, [result])
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(expected).max())))


def _check_split_on_ort(model: onnx.ModelProto, seed: str, result: str, x: np.ndarray, seeds: np.ndarray) -> None:
    """ONNX Runtime loads both float32 halves and they give the combined model's gradient."""
    split = split_gradient_model(model, seed, result, "y")
    assert split is not None
    names = [value.name for value in split.forward.graph.output]
    values = {"x": x, **dict(zip(names, _wired(split, "forward").run(names, {"x": x}), strict=True))}
    (actual,) = _wired(split, "gradient").run([result], {seed: seeds, **{name: values[name] for name in split.kept}})
    (expected,) = _ort(model).run([result], {"x": x, seed: seeds})
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(expected).max())))


def _wired(split, half: str):
    """The half as fimaudit runs it: its weights appended on the wire (runtime.create_session)."""
    from fimaudit.runtime import create_session

    session, _ = create_session(getattr(split, half), ["CPUExecutionProvider"], 1, getattr(split, f"{half}_weights"))
    return session


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_split_gradient_models_compute_what_the_combined_ones_compute(case) -> None:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    model = case.build(np.float64)
    x = case.sample(rng, case.x_shape).astype(np.float64)
    (y,) = _run(model, {"x": x}, ["y"])
    u, v = rng.normal(size=(LEAD, *y.shape)), rng.normal(size=(LEAD, *x.shape))
    _check_split(build_vjp_model(model, "x", "y"), COTANGENT, INPUT_GRAD, x, u)
    _check_split(build_jvp_model(model, "x", "y"), TANGENT, OUTPUT_TANGENT, x, v)
    model32, x32 = case.build(np.float32), x.astype(np.float32)
    _check_split_on_ort(build_vjp_model(model32, "x", "y"), COTANGENT, INPUT_GRAD, x32, u.astype(np.float32))
    _check_split_on_ort(build_jvp_model(model32, "x", "y"), TANGENT, OUTPUT_TANGENT, x32, v.astype(np.float32))


def _opaque_model(result_type: int | None) -> onnx.ModelProto:
    """x -> Opaque (an op shape inference knows nothing of) -> t; y = t; g = cotangent * t."""
    nodes = [
        helper.make_node("Opaque", ["x"], ["t"], domain="example.unknown"),
        helper.make_node("Mul", [COTANGENT, "t"], ["g"]),
        helper.make_node("Identity", ["t"], ["y"]),
    ]
    result = (
        helper.make_tensor_value_info("g", result_type, [2, 1, 3])
        if result_type
        else helper.make_empty_tensor_value_info("g")
    )
    graph = helper.make_graph(
        nodes,
        "unknown",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info(COTANGENT, onnx.TensorProto.FLOAT, [2, 1, 3]),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3]), result],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("example.unknown", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_a_tensor_of_unknown_type_is_recomputed_on_the_gradient_side() -> None:
    """The Opaque output has no type to declare it by: the gradient half recomputes it from x."""
    split = split_gradient_model(_opaque_model(onnx.TensorProto.FLOAT), COTANGENT, "g", "y")
    assert split is not None and split.kept == ("x",)
    assert [node.op_type for node in split.gradient.graph.node] == ["Opaque", "Mul"]


def test_a_result_of_unknown_type_leaves_the_model_unsplit() -> None:
    assert split_gradient_model(_opaque_model(None), COTANGENT, "g", "y") is None


def _resnet_source():
    from fimaudit.audit import AuditConfig, intake, prepare_model
    from fimaudit.gradients import make_source

    path = "sample_models/resnet_small.onnx"
    data = np.load("sample_models/digits_test.npy")[:3].astype(np.float32)
    prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), data[:1])
    source = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    return source, data


def test_products_run_the_forward_once_per_sample_and_match_the_combined_model(monkeypatch) -> None:
    source, data = _resnet_source()
    rng = np.random.default_rng(3)
    cotangents = rng.normal(size=(4, source.num_classes))
    tangents = rng.normal(size=(4, source.input_size))
    for _ in range(graph_gradients.KEEP_FORWARD_AFTER + 1):  # both split models built before the split is off
        source.jvp(data[-1], tangents[:1])
    assert isinstance(source._jvp_kept, graph_gradients._KeptForwardSession)
    assert source._jvp_kept.forward is source._vjp.forward  # one forward half for both modes
    monkeypatch.setattr(graph_gradients, "split_gradient_model", lambda *args: None)
    combined, _ = _resnet_source()
    assert isinstance(combined._vjp, graph_gradients._GradientSession)
    for sample in data:
        source.vjp(sample, cotangents[:1])  # the forward half runs here, once for the sample
        runs, evaluations = source.accounting.runs, source.accounting.evaluations
        pulled = source.vjp(sample, cotangents)
        assert isinstance(source._vjp, graph_gradients._KeptForwardSession)
        # One gradient run of 4 rows: the forward was not run again.
        assert (source.accounting.runs - runs, source.accounting.evaluations - evaluations) == (1, 4)
        np.testing.assert_allclose(pulled, combined.vjp(sample, cotangents), rtol=1e-5, atol=1e-6 * np.abs(pulled).max())

        # J v: the combined model for the first KEEP_FORWARD_AFTER calls on a sample (a forward
        # row each), then the kept halves: gradient rows only, the shared forward half having
        # run for the vjp above.
        pushed = [source.jvp(sample, tangents) for _ in range(graph_gradients.KEEP_FORWARD_AFTER)]
        evaluations = source.accounting.evaluations
        kept = [source.jvp(sample, tangents) for _ in range(3)]
        assert source.accounting.evaluations - evaluations == 3 * 4
        expected = combined.jvp(sample, tangents)
        for result in pushed + kept:
            np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    dense, reference = source.dense(data), combined.dense(data)
    np.testing.assert_allclose(dense, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())



def test_an_estimator_that_expects_products_splits_from_its_first_jvp() -> None:
    from fimaudit.gradients.base import FiniteDerivatives, expect_products

    source, data = _resnet_source()
    whole, _ = _resnet_source()
    tangents = np.random.default_rng(4).normal(size=(2, source.input_size))
    evaluations = source.accounting.evaluations
    source.jvp(data[0], tangents)  # no hint (the gradient check): the combined model, B + M*B rows
    assert source._jvp_kept is None and source.accounting.evaluations - evaluations == 1 + 2
    expect_products(FiniteDerivatives(source, 1), data[1])  # through a wrapper, as CostMeter sends it
    assert isinstance(source._jvp_kept, graph_gradients._KeptForwardSession)  # split before the first product
    evaluations = source.accounting.evaluations
    cotangents = np.random.default_rng(5).normal(size=(2, source.num_classes))
    pulled = source.vjp(data[1], cotangents)
    first = source.jvp(data[1], tangents)
    again = source.jvp(data[1], tangents)
    # One forward row for both modes (the shared forward half), then two gradient rows a run.
    assert source.accounting.evaluations - evaluations == 1 + 2 + 2 + 2
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, whole.jvp(data[1], tangents), rtol=1e-5, atol=1e-6 * np.abs(first).max())
    np.testing.assert_allclose(pulled, whole.vjp(data[1], cotangents), rtol=1e-5, atol=1e-6 * np.abs(pulled).max())


def test_the_cost_meter_of_an_estimator_sends_the_hint() -> None:
    from fimaudit.fisher.operator import CostMeter
    from fimaudit.fisher.problem import SampleProblem

    seen = []

    class Source:
        accounting = graph_gradients.RunAccounting()

        def expect_products(self, sample):
            seen.append(sample)

    sample = np.zeros(3)
    CostMeter(SampleProblem(sample=sample, logits=np.zeros(3), jacobian=Source()))
    assert len(seen) == 1 and seen[0] is sample


def test_logits_after_a_jacobian_come_from_its_forward_half_without_a_run() -> None:
    source, data = _resnet_source()
    expected = source.logits(data)  # several rows: the logits model
    source.dense(data[:1])
    runs, evaluations = source.accounting.runs, source.accounting.evaluations
    held = source.logits(data[:1])
    assert (source.accounting.runs, source.accounting.evaluations) == (runs, evaluations)  # nothing ran
    np.testing.assert_allclose(held, expected[:1], rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    other = source.logits(data[1:2])  # not the rows the forward half holds: the logits model runs
    assert source.accounting.runs == runs + 1
    np.testing.assert_allclose(other, expected[1:2], rtol=1e-6, atol=1e-7 * np.abs(expected).max())


def test_a_sample_changed_in_place_runs_the_forward_half_again() -> None:
    """The kept tensors belong to the rows' values, not to the array object the caller passes."""
    source, data = _resnet_source()
    cotangents = np.random.default_rng(4).normal(size=(2, source.num_classes))
    sample = data[0].copy()
    source.vjp(sample, cotangents)
    evaluations = source.accounting.evaluations
    source.vjp(sample.copy(), cotangents)  # equal values in another array: the kept forward serves
    assert source.accounting.evaluations - evaluations == 2
    sample[...] = data[1]  # the same array, other values
    evaluations = source.accounting.evaluations
    changed = source.vjp(sample, cotangents)
    assert source.accounting.evaluations - evaluations == 1 + 2  # the forward half ran again
    fresh, _ = _resnet_source()
    expected = fresh.vjp(data[1], cotangents)
    np.testing.assert_allclose(changed, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_kept_rows_match_bit_for_bit() -> None:
    """As the bytes key before: the same NaN matches, -0.0 is not 0.0, integer rows (token ids) work."""
    seen = graph_gradients._RowsSeen()
    assert not seen.matches(np.zeros((1, 2), dtype=np.float32))  # nothing held yet
    rows = np.array([[1.0, np.nan, 0.0]], dtype=np.float32)
    seen.remember(rows)
    assert seen.matches(rows.copy())
    assert not seen.matches(np.array([[1.0, np.nan, -0.0]], dtype=np.float32))
    assert not seen.matches(rows.astype(np.float64))  # another dtype is other rows
    tokens = np.arange(6, dtype=np.int64).reshape(1, 6)
    seen.remember(tokens)
    assert seen.matches(tokens.copy()) and not seen.matches(tokens[:, ::-1])
    seen.forget()
    assert not seen.matches(tokens)


def _attention_like_model(elem_type: int = onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """y = Flatten(softmax(a a^T) a), a = Relu(x) [1, 4, 3]: MatMuls whose operands both depend on x."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Transpose", ["a"], ["a_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["a", "a_t"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "a"], ["o"]),
        helper.make_node("Flatten", ["o"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "attention_like",
        [helper.make_tensor_value_info("x", elem_type, [1, 4, 3])],
        [helper.make_tensor_value_info("y", elem_type, [1, 12])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _swaps_last_two(node: onnx.NodeProto) -> bool:
    if node.op_type != "Transpose":
        return False
    perm = [value for attribute in node.attribute if attribute.name == "perm" for value in attribute.ints]
    return len(perm) >= 2 and perm[-2:] == [len(perm) - 1, len(perm) - 2]


@pytest.mark.parametrize("build", [build_vjp_model, build_jvp_model], ids=["vjp", "jvp"])
def test_operand_transposes_of_gradient_matmuls_stay_beside_them(build) -> None:
    """The VJP rule's B^T and A^T of a MatMul whose operands are activations go to the gradient half.

    There ONNX Runtime folds them into the MatMul; on the forward side they were copies handed
    over as extra tensors. The model's own Transpose, which its forward MatMul reads, stays.
    """
    seed, result = (COTANGENT, INPUT_GRAD) if build is build_vjp_model else (TANGENT, OUTPUT_TANGENT)
    model = build(_attention_like_model(), "x", "y")
    split = split_gradient_model(model, seed, result, "y")
    assert split is not None
    forward_readers: dict[str, list[str]] = {}
    for node in split.forward.graph.node:
        for name in node.input:
            forward_readers.setdefault(name, []).append(node.op_type)
    gradient_matmul_reads = {
        name for node in split.gradient.graph.node if node.op_type == "MatMul" for name in node.input
    }
    for node in split.forward.graph.node:
        if _swaps_last_two(node) and node.output[0] in split.kept:
            # Kept and transposed on the forward side: only where the forward reads it too.
            assert forward_readers.get(node.output[0]), f"{node.output[0]} is a copy made only for the gradient half"
    moved = [
        node
        for node in split.gradient.graph.node
        if _swaps_last_two(node) and node.input[0] in split.kept and node.output[0] in gradient_matmul_reads
    ]
    # The JVP of a MatMul (dA B + A dB) transposes nothing; the VJP's (g B^T, A^T g) does.
    assert bool(moved) == (build is build_vjp_model)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 4, 3)).astype(np.float32)
    seeds = rng.normal(size=(LEAD, 1, 12) if build is build_vjp_model else (LEAD, 1, 4, 3)).astype(np.float32)
    _check_split_on_ort(model, seed, result, x, seeds)
    model64 = build(_attention_like_model(onnx.TensorProto.DOUBLE), "x", "y")
    _check_split(model64, seed, result, x.astype(np.float64), seeds.astype(np.float64))
