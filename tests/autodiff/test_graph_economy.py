"""What the VJP graph is made of, where two savings apply (their values are checked by the op cases).

- Placements that tile an axis are joined by one Concat, not summed as padded copies
  (``RuleContext._tiled``; the op cases Gather/qkv-tiles, Gather/two-of-three-tiles,
  Gather/same-position-twice and Slice/tiles check the values).
- MaxPool windows that tile the input route gradients through a winner mask, without
  ScatterElements or GatherElements (op cases MaxPool/tiling-*); at ties the mask picks the tap
  the scatter path picks (checked below on tied inputs, where the op cases have none), square
  2-D float windows by SpaceToDepth's blocks.
- A stride-1 Conv's adjoint is a flipped Conv, except for an ungrouped Conv reading few channels
  (``linear.FEW_INPUT_CHANNELS``: an image's first layer), whose adjoint stays ConvTranspose
  (the op cases Conv/* check the values of both forms).
- Dims that shape inference names with fresh symbols are measured by the probe, so broadcasts
  between them are undone statically, without the run-time Shape/Equal/NonZero chain
  (``build._unsettled``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, build_vjp_model
from fimaudit.autodiff.probe_shapes import ShapeProbe
from fimaudit.autodiff.build import OUTPUT_TANGENT, TANGENT, build_jvp_model
from tests.autodiff.cases_gather import CASES as GATHER_CASES
from tests.autodiff.cases_linear import CASES as LINEAR_CASES
from tests.autodiff.cases_pooling import CASES as POOLING_CASES
from tests.autodiff.cases_shape import CASES as SHAPE_CASES
from tests.autodiff.test_rules import _ort


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node if node.name.startswith("fimaudit_ad"))


@pytest.mark.parametrize(("case_id", "present", "absent"), [
    ("Gather/qkv-tiles", {"Concat"}, {"Pad", "Sum", "Add"}),
    ("Gather/two-of-three-tiles", {"Concat", "Pad"}, {"Sum", "Add"}),
    ("Gather/same-position-twice", {"Add", "Pad"}, {"Concat"}),
    ("Slice/tiles", {"Concat"}, {"Pad", "Sum"}),
])
def test_tiling_placements_are_joined_by_one_concat(case_id: str, present: set[str], absent: set[str]) -> None:
    case = next(c for c in [*GATHER_CASES, *SHAPE_CASES] if c.id == case_id)
    ops = _ops(build_vjp_model(case.build(np.float32), "x", "y"))
    assert present <= set(ops), ops
    assert not absent & set(ops), ops


@pytest.mark.parametrize(("case_id", "adjoint"), [
    ("Conv/plain-bias", "ConvTranspose"),  # 3 channels, like an RGB image's first layer
    ("Conv/stride1-four-channels", "ConvTranspose"),
    ("Conv/stride1-five-channels-bias", "Conv"),
    ("Conv/stride1-six-channels-dilation-asym-pads", "Conv"),
    ("Conv/stride1-five-channels-3d", "Conv"),
    ("Conv/stride1-group3-dilation-asym-pads", "Conv"),  # grouped: 2 channels a group, still a Conv
    ("Conv/stride2-odd", "ConvTranspose"),
])
def test_stride1_conv_adjoint_form_follows_the_channels_read(case_id: str, adjoint: str) -> None:
    case = next(c for c in LINEAR_CASES if c.id == case_id)
    ops = _ops(build_vjp_model(case.build(np.float32), "x", "y"))
    other = {"Conv": "ConvTranspose", "ConvTranspose": "Conv"}[adjoint]
    assert ops[adjoint] == 1 and ops[other] == 0, ops


def _reshaped_by_its_own_shape() -> onnx.ModelProto:
    """x [N, 6] reshaped to (Shape(x)[0], 2, 3) twice, then multiplied.

    Shape inference gives the first Reshape's dims fresh symbols (unk__..), and cannot follow the
    second's target at all (its tail is gathered at NonZero's indices): that unknown shape makes
    the probe run, and the Mul's broadcast between the two is undecidable unless the symbols are
    measured in the same run.
    """
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero1", "one1"], ["n"]),
        helper.make_node("Identity", ["tail"], ["tail_a"]),
        helper.make_node("Concat", ["n", "tail_a"], ["target_a"], axis=0),
        helper.make_node("Reshape", ["x", "target_a"], ["ra"]),
        helper.make_node("NonZero", ["mask"], ["nz"]),
        helper.make_node("Reshape", ["nz", "minus1"], ["picked"]),
        helper.make_node("Gather", ["tail", "picked"], ["tail_b"]),
        helper.make_node("Concat", ["n", "tail_b"], ["target_b"], axis=0),
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Reshape", ["rx", "target_b"], ["rb"]),
        helper.make_node("Mul", ["ra", "rb"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (("zero1", 0), ("one1", 1),
                                                                                     ("minus1", -1))]
    inits += [numpy_helper.from_array(np.array([2, 3], np.int64), "tail"),
              numpy_helper.from_array(np.array([True, True]), "mask")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fresh_symbols_are_measured_and_broadcasts_undone_statically(monkeypatch: pytest.MonkeyPatch) -> None:
    from fimaudit.autodiff import build

    model = _reshaped_by_its_own_shape()
    measured = build_vjp_model(model, "x", "y", ShapeProbe((6,)))
    monkeypatch.setattr(build, "_unsettled", lambda shape, batch: shape is None)  # unknown shapes only
    unknown_only = build_vjp_model(model, "x", "y", ShapeProbe((6,)))
    assert "NonZero" in _ops(unknown_only)  # the broadcast really is undecidable without the symbols
    assert "NonZero" not in _ops(measured)
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # the measured graph holds at any batch, 1 included
        x = rng.normal(size=(batch, 6)).astype(np.float32)
        u = rng.normal(size=(2, batch, 2, 3)).astype(np.float32)
        pulled = [_ort(m).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0] for m in (unknown_only, measured)]
        np.testing.assert_allclose(pulled[1], pulled[0], rtol=1e-6, atol=1e-6)


def test_no_probe_runs_when_every_shape_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh symbols alone do not start a probe (a probe copies the model and builds two sessions)."""
    from fimaudit.autodiff import build

    calls: list[list[str]] = []
    real = build.measured_shapes
    monkeypatch.setattr(build, "measured_shapes", lambda model, name, names, *a, **k: calls.append(names) or real(
        model, name, names, *a, **k))
    model = _reshaped_by_its_own_shape()
    graph = model.graph
    for node in graph.node:  # both targets built alike: fresh symbols everywhere, no unknown shape
        if node.output[0] == "rb":
            node.input[1] = "target_a"
    build_vjp_model(model, "x", "y", ShapeProbe((6,)))
    assert calls and all(not names for names in calls)


@pytest.mark.parametrize("case_id", ["MaxPool/tiling-2x2", "MaxPool/tiling-1d", "MaxPool/tiling-symbolic-batch"])
def test_tiling_max_pools_use_the_winner_mask_and_match_the_scatter_path_at_ties(case_id: str, monkeypatch) -> None:
    import fimaudit.autodiff.rules.pooling as pooling

    case = next(c for c in POOLING_CASES if c.id == case_id)
    model = case.build(np.float32)
    masked_vjp, masked_jvp = build_vjp_model(model, "x", "y"), build_jvp_model(model, "x", "y")
    # Square 2-D float windows: the mask by SpaceToDepth's blocks (pooling._winner_mask_by_blocks),
    # so the ties below check its tap order too; the 1-D pool and a float64 model keep the Transpose form.
    square = len(case.x_shape) == 4
    for built in (masked_vjp, masked_jvp):
        assert not {"ScatterElements", "GatherElements"} & set(_ops(built)), _ops(built)
        assert ({"SpaceToDepth", "DepthToSpace"} <= set(_ops(built))) == square, _ops(built)
    assert "SpaceToDepth" not in _ops(build_vjp_model(case.build(np.float64), "x", "y"))
    monkeypatch.setattr(pooling, "_tiles", lambda win: False)
    scatter_vjp, scatter_jvp = build_vjp_model(model, "x", "y"), build_jvp_model(model, "x", "y")
    assert "ScatterElements" in _ops(scatter_vjp) and "GatherElements" in _ops(scatter_jvp)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=case.x_shape).astype(np.float32)  # values 0, 1, 2: ties in most windows
    (y,) = _ort(model).run(["y"], {"x": x})
    u = rng.normal(size=(2, *y.shape)).astype(np.float32)
    v = rng.normal(size=(2, *x.shape)).astype(np.float32)

    def run(built: onnx.ModelProto, seed: str, values: np.ndarray, result: str) -> np.ndarray:
        return _ort(built).run([result], {"x": x, seed: values})[0]

    pulled = run(masked_vjp, COTANGENT, u, INPUT_GRAD)
    assert np.count_nonzero(pulled) == u.size  # one winner per window, each cotangent lands once
    np.testing.assert_array_equal(pulled, run(scatter_vjp, COTANGENT, u, INPUT_GRAD))
    np.testing.assert_array_equal(run(masked_jvp, TANGENT, v, OUTPUT_TANGENT), run(scatter_jvp, TANGENT, v, OUTPUT_TANGENT))


def _attention_reshape_with_a_dynamic_batch() -> onnx.ModelProto:
    """x [N, 6, 8] (N symbolic) -> Transpose to [6, N, 8] -> Reshape to [6, N*2, 4] -> Tanh -> back.

    TorchScript's MultiheadAttention export reshapes so ([L, B*H, d]): one dimension of the target
    is unknown to shape inference, the others static.
    """
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Shape", ["t"], ["ts"]),
        helper.make_node("Gather", ["ts", "one"], ["n"], axis=0),
        helper.make_node("Mul", ["n", "two"], ["n2"]),
        helper.make_node("Unsqueeze", ["n2", "axes0"], ["n2v"]),
        helper.make_node("Concat", ["six", "n2v", "four"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "target"], ["heads"]),
        helper.make_node("Tanh", ["heads"], ["h"]),
        helper.make_node("Reshape", ["h", "back"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, dtype=np.int64), name) for name, v in
             [("one", 1), ("two", 2), ("axes0", [0]), ("six", [6]), ("four", [4]), ("back", [6, -1])]]
    graph = helper.make_graph(nodes, "mha", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_reshape_with_one_unknown_dimension_gets_a_constant_target() -> None:
    """No Shape/Slice/Concat of the seed per Reshape: [0, ..., -1, ...] (0 copies the lead M)."""
    model = _attention_reshape_with_a_dynamic_batch()
    vjp, jvp = build_vjp_model(model, "x", "y"), build_jvp_model(model, "x", "y")
    for built in (vjp, jvp):
        assert "Concat" not in _ops(built), _ops(built)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 6, 8)).astype(np.float32)
    (y,) = _ort(model).run(["y"], {"x": x})
    u = rng.normal(size=(4, *y.shape)).astype(np.float32)
    v = rng.normal(size=(4, *x.shape)).astype(np.float32)
    pulled = _ort(vjp).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0]
    pushed = _ort(jvp).run([OUTPUT_TANGENT], {"x": x, TANGENT: v})[0]
    # The Jacobian is diag(1 - tanh^2) in the permuted layout: compare against it directly.
    derivative = (1 - np.tanh(x) ** 2).astype(np.float64)
    permuted = lambda a: np.transpose(a.reshape(a.shape[0], 6, 3, 8), (0, 2, 1, 3))  # noqa: E731  [M, 6, N*8] -> [M, N, 6, 8]
    np.testing.assert_allclose(pulled, permuted(u) * derivative, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pushed, np.transpose(v * derivative, (0, 2, 1, 3)).reshape(u.shape), rtol=1e-5, atol=1e-6)
    # The adjoint identity between the two.
    np.testing.assert_allclose(np.sum(pushed * u), np.sum(pulled * v), rtol=1e-5)


def _attention_scores_with_a_transposed_key() -> onnx.ModelProto:
    """scores = (x Wq) (Transpose(x Wk) * s) with s = Sqrt of a computed scalar, as TorchScript exports it."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "last"], ["width"], axis=0),
        helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
        helper.make_node("Reciprocal", ["width_f"], ["inverse"]),
        helper.make_node("Sqrt", ["inverse"], ["scale"]),
        helper.make_node("Mul", ["kt", "scale"], ["kts"]),
        helper.make_node("MatMul", ["q", "kts"], ["y"]),
    ]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "wq"),
             numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "wk"),
             numpy_helper.from_array(np.array(2, dtype=np.int64), "last")]
    graph = helper.make_graph(nodes, "scores", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_gradient_of_a_transposed_key_is_emitted_transposed(monkeypatch: pytest.MonkeyPatch) -> None:
    """(A^T g)^T = g^T A for K^T's gradient: the same values; the Transpose lands on the MatMul's operand."""
    from fimaudit.autodiff.context import RuleContext

    model = _attention_scores_with_a_transposed_key()
    turned = build_vjp_model(model, "x", "y")
    producer = {out: node for node in turned.graph.node for out in node.output}
    fed = [producer.get(node.input[0]) for node in turned.graph.node
           if node.op_type == "MatMul" and node.name.startswith("fimaudit_ad")]
    # g^T A: a MatMul whose first operand is the transposed cotangent (ONNX Runtime fuses it).
    assert any(p is not None and p.op_type == "Transpose" and COTANGENT in p.input for p in fed)
    monkeypatch.setattr(RuleContext, "is_transposed_matrix", lambda self, name: False)
    plain = build_vjp_model(model, "x", "y")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    u = rng.normal(size=(3, 2, 5, 5)).astype(np.float32)
    got = _ort(turned).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0]
    np.testing.assert_allclose(got, _ort(plain).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0], rtol=1e-5, atol=1e-6)
    # And against central differences of the forward model in float64 (scores are bilinear in x).
    (y,) = _ort(model).run(["y"], {"x": x})
    direction = rng.normal(size=x.shape).astype(np.float32)
    step = 1e-2
    plus = _ort(model).run(["y"], {"x": x + step * direction})[0].astype(np.float64)
    minus = _ort(model).run(["y"], {"x": x - step * direction})[0].astype(np.float64)
    along = (plus - minus) / (2 * step)  # exact for a quadratic up to float32 rounding
    np.testing.assert_allclose(np.einsum("mbij,bij->m", u, along), np.einsum("mbij,bij->m", got, direction),
                               rtol=1e-3)
