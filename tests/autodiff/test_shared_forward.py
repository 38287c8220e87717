"""One forward half for both modes (autodiff/shared_forward.py) hands each mode what its own did.

Every case of the gradient-rule table, float64 on onnx's reference evaluator: the VJP's and the
JVP's kept-forward halves merged into one model; the VJP's gradient half fed from the shared
model's outputs gives the combined VJP model's result to 1e-12, the JVP's fed from the renamed
outputs the combined JVP model's; the network's own nodes appear once. Then the refusals: a
constant under one name with two values is not confused, a model that uses the prefix itself,
different opset versions, and two halves that share no logits are not merged.
"""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from fimaudit.autodiff.build import (
    COTANGENT,
    INPUT_GRAD,
    OUTPUT_TANGENT,
    TANGENT,
    at_gradient_opset,
    build_jvp_model,
    build_vjp_model,
)
from fimaudit.autodiff.kept_forward import SplitGradientModel, split_gradient_model
from fimaudit.autodiff.shared_forward import PREFIX, share_forward
from tests.autodiff.test_kept_forward import _run
from tests.autodiff.test_rules import CASES, LEAD


def _complete(model: onnx.ModelProto, weights) -> onnx.ModelProto:
    whole = onnx.ModelProto()
    whole.CopyFrom(model)
    whole.graph.initializer.extend(weights)
    return whole


def _shared(first: SplitGradientModel, second: SplitGradientModel):
    weights = {tensor.name: tensor for tensor in first.forward_weights}
    return share_forward(first.forward, weights, second, "y")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_shared_forward_hands_both_modes_what_their_own_halves_did(case) -> None:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    model = case.build(np.float64)
    x = case.sample(rng, case.x_shape).astype(np.float64)
    (y,) = _run(model, {"x": x}, ["y"])
    u, v = rng.normal(size=(LEAD, *y.shape)), rng.normal(size=(LEAD, *x.shape))
    vjp_model, jvp_model = build_vjp_model(model, "x", "y"), build_jvp_model(model, "x", "y")
    vjp = split_gradient_model(vjp_model, COTANGENT, INPUT_GRAD, "y")
    jvp = split_gradient_model(jvp_model, TANGENT, OUTPUT_TANGENT, "y")
    assert vjp is not None and jvp is not None
    shared = _shared(vjp, jvp)
    assert shared is not None, "two halves of one network not merged"
    # The network's own nodes are not computed again for the JVP (the rules' extra nodes may be).
    network = {(node.op_type, tuple(node.input)) for node in at_gradient_opset(model).graph.node}
    merged = Counter((node.op_type, tuple(node.input)) for node in shared.model.graph.node)
    own = Counter((node.op_type, tuple(node.input)) for node in vjp.forward.graph.node)
    assert all(merged[key] == own[key] for key in network)

    names = [value.name for value in shared.model.graph.output]
    values = {"x": x, **dict(zip(names, _run(_complete(shared.model, shared.weights), {"x": x}, names), strict=True))}
    np.testing.assert_array_equal(values["y"], y)
    for split, seed, seeds, result, combined, renamed in (
        (vjp, COTANGENT, u, INPUT_GRAD, vjp_model, {name: name for name in vjp.kept}),
        (jvp, TANGENT, v, OUTPUT_TANGENT, jvp_model, shared.second_names),
    ):
        (expected,) = _run(combined, {"x": x, seed: seeds}, [result])
        feeds = {seed: seeds, **{name: values[renamed[name]] for name in split.kept}}
        (actual,) = _run(split.complete("gradient"), feeds, [result])
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(expected).max())))


def _half(nodes: list[onnx.NodeProto], kept: list[str], weights: dict[str, np.ndarray], opset: int = 17):
    """A hand-made forward half x -> (y, *kept) and a trivial gradient half, as split_gradient_model returns."""
    float_info = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [2]) for name in ["y", *kept]]
    forward = helper.make_model(
        helper.make_graph(nodes, "forward", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                          float_info),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    tensors = tuple(
        numpy_helper.from_array(np.asarray(value, dtype=np.float32), name) for name, value in weights.items()
    )
    return SplitGradientModel(forward, onnx.ModelProto(), tuple(kept), tensors, ())


def _first():
    nodes = [helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    return _half(nodes, ["m"], {"c": [2.0, 2.0]})


def test_a_constant_with_the_same_name_and_another_value_is_not_confused() -> None:
    first = _first()
    nodes = [helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Relu", ["m"], ["y"]),
             helper.make_node("Mul", ["x", "c"], ["t"])]
    same_logits = _half(nodes, ["t"], {"c": [2.0, 2.0]})
    other_constant = _half(
        [*nodes[:2], helper.make_node("Mul", ["x", "k"], ["t"])], ["t"], {"c": [2.0, 2.0], "k": [3.0, 3.0]}
    )
    weights = {tensor.name: tensor for tensor in first.forward_weights}
    shared = share_forward(first.forward, weights, same_logits, "y")
    assert shared is not None and shared.second_names == {"t": "m"}  # x * c is x * c: computed once
    assert len(shared.model.graph.node) == 2

    shared = share_forward(first.forward, weights, other_constant, "y")
    assert shared is not None and shared.second_names == {"t": PREFIX + "t"}
    model = _complete(shared.model, shared.weights)
    x = np.array([1.0, -1.0], dtype=np.float32)
    (t,) = _run(model, {"x": x}, [PREFIX + "t"])
    np.testing.assert_array_equal(t, 3 * x)

    clash = _half(nodes[:2] + [helper.make_node("Mul", ["x", "c"], ["t"])], ["t"], {"c": [5.0, 5.0]})
    shared = share_forward(first.forward, weights, clash, "y")
    # The second half's c is another tensor: its logits are not the first's, nothing to share.
    assert shared is None


def test_a_model_that_uses_the_prefix_itself_is_not_merged() -> None:
    nodes = [helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Relu", ["m"], ["y"]),
             helper.make_node("Neg", ["x"], [PREFIX + "t"])]
    first = _half(nodes, ["m", PREFIX + "t"], {"c": [2.0, 2.0]})
    second = _half([*nodes[:2], helper.make_node("Sin", ["x"], ["t"])], ["t"], {"c": [2.0, 2.0]})
    weights = {tensor.name: tensor for tensor in first.forward_weights}
    assert share_forward(first.forward, weights, second, "y") is None


def test_halves_at_different_opsets_or_with_other_logits_are_not_merged() -> None:
    first = _first()
    weights = {tensor.name: tensor for tensor in first.forward_weights}
    newer = _half(list(first.forward.graph.node), ["m"], {"c": [2.0, 2.0]}, opset=18)
    assert share_forward(first.forward, weights, newer, "y") is None
    other = _half([helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Sigmoid", ["m"], ["y"])], ["m"],
                  {"c": [2.0, 2.0]})
    assert share_forward(first.forward, weights, other, "y") is None
