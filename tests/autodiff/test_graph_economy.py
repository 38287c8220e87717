"""What the VJP graph is made of, where two savings apply (their values are checked by the op cases).

- Placements that tile an axis are joined by one Concat, not summed as padded copies
  (``RuleContext._tiled``; the op cases Gather/qkv-tiles, Gather/two-of-three-tiles,
  Gather/same-position-twice and Slice/tiles check the values).
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
from tests.autodiff.cases_gather import CASES as GATHER_CASES
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


def _reshaped_by_its_own_shape() -> onnx.ModelProto:
    """x [N, 6] reshaped to (Shape(x)[0], 2, 3) twice, by two targets computed apart, then added.

    Shape inference gives each Reshape's output dims fresh symbols of its own (unk__0.. and
    unk__3..): the Add's broadcast between them is undecidable without the probe.
    """
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Relu", ["x"], ["rx"])]
    for tag in ("a", "b"):
        nodes += [
            helper.make_node("Gather", ["s", "zero"], [f"n0{tag}"], axis=0),
            helper.make_node("Identity", [f"n0{tag}"], [f"n1{tag}"]),
            helper.make_node("Unsqueeze", [f"n1{tag}", "ax"], [f"n{tag}"]),
            helper.make_node("Concat", [f"n{tag}", "tail"], [f"target{tag}"], axis=0),
        ]
    nodes += [
        helper.make_node("Reshape", ["x", "targeta"], ["ra"]),
        helper.make_node("Reshape", ["rx", "targetb"], ["rb"]),
        helper.make_node("Mul", ["ra", "rb"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "tail")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fresh_symbols_are_measured_and_broadcasts_undone_statically() -> None:
    model = _reshaped_by_its_own_shape()
    without = build_vjp_model(model, "x", "y")
    measured = build_vjp_model(model, "x", "y", ShapeProbe((6,)))
    assert "NonZero" in _ops(without)  # the case really is undecidable statically
    assert "NonZero" not in _ops(measured)
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # the measured graph holds at any batch, 1 included
        x = rng.normal(size=(batch, 6)).astype(np.float32)
        u = rng.normal(size=(2, batch, 2, 3)).astype(np.float32)
        pulled = [_ort(m).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0] for m in (without, measured)]
        np.testing.assert_allclose(pulled[1], pulled[0], rtol=1e-6, atol=1e-6)
