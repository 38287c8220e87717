"""What the registry still lacks, listed in one place, and refused loudly by name.

``STILL_MISSING`` is the registry's completeness list for the ops of issue 16 item 7 that have no
rule yet: the test fails when one of them gains a rule (update the list and add an op case) and
checks that a graph using it is refused with an UnsupportedOpError naming the op, never a wrong
gradient. Einsum's stated limits (diagonals, ellipsis) are refused the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from fimaudit.autodiff import registry
from fimaudit.autodiff.build import build_jvp_model, build_vjp_model
from fimaudit.errors import UnsupportedOpError
from tests.autodiff.opcases import OpCase, chain, single

STILL_MISSING = ["GRU", "If", "LSTM", "Loop", "RNN", "Scan"]

_rng = np.random.default_rng(5)


def _branch(name: str, op: str) -> object:
    """A subgraph reading the outer x: op(x)."""
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.UNDEFINED, None)
    return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_out"])], name, [], [out])


def _if_nodes() -> list:
    return [
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", "Relu"), else_branch=_branch("else", "Tanh")),
    ]


def _loop_nodes() -> list:
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Tanh", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.UNDEFINED, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.UNDEFINED, None)],
    )
    return [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)]


def _scan_nodes() -> list:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "e"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["o"])],
        "body",
        [helper.make_tensor_value_info("s_in", TensorProto.DOUBLE, [3]), helper.make_tensor_value_info("e", TensorProto.DOUBLE, [3])],
        [helper.make_tensor_value_info("s_out", TensorProto.DOUBLE, [3]), helper.make_tensor_value_info("o", TensorProto.DOUBLE, [3])],
    )
    return [helper.make_node("Scan", ["init", "x"], ["last", "y"], body=body, num_scan_inputs=1)]


REFUSED: list[tuple[OpCase, str]] = [
    (single("LSTM", "LSTM", (4, 2, 3), ["x", "W", "R"], {"W": _rng.normal(size=(1, 8, 3)), "R": _rng.normal(size=(1, 8, 2))}, hidden_size=2, num_outputs=1), "LSTM"),
    (single("GRU", "GRU", (4, 2, 3), ["x", "W", "R"], {"W": _rng.normal(size=(1, 6, 3)), "R": _rng.normal(size=(1, 6, 2))}, hidden_size=2, num_outputs=1), "GRU"),
    (single("RNN", "RNN", (4, 2, 3), ["x", "W", "R"], {"W": _rng.normal(size=(1, 2, 3)), "R": _rng.normal(size=(1, 2, 2))}, hidden_size=2, num_outputs=1), "RNN"),
    (chain("If/constant-condition", _if_nodes, (2, 3), covers=["If"]), "If"),
    (chain("Loop", _loop_nodes, (2, 3), covers=["Loop"], weights={"trips": np.array(3, np.int64)}), "Loop"),
    (chain("Scan", _scan_nodes, (4, 3), covers=["Scan"], weights={"init": np.zeros(3)}), "Scan"),
    (single("Einsum/diagonal", "Einsum", (3, 3), equation="ii->i", opset=12), "Einsum.*repeated"),
    (single("Einsum/ellipsis", "Einsum", (2, 3, 4), ["x", "w"], {"w": _rng.normal(size=(4, 5))}, equation="...j,jk->...k", opset=12), "Einsum.*ellipsis"),
]


def test_still_missing_is_the_registry_truth() -> None:
    ruled = set(registry.vjp_ops()) | set(registry.jvp_ops())
    assert sorted(set(STILL_MISSING) & ruled) == [], "an op gained a rule: drop it from STILL_MISSING and add an op case"
    for op in ["InstanceNormalization", "GroupNormalization", "LpNormalization", "MeanVarianceNormalization", "Einsum", "CumSum"]:
        assert op in ruled


@pytest.mark.parametrize("case,pattern", REFUSED, ids=[case.id for case, _ in REFUSED])
@pytest.mark.parametrize("build", [build_vjp_model, build_jvp_model], ids=["vjp", "jvp"])
def test_refused_by_name(case: OpCase, pattern: str, build) -> None:
    model = case.build(np.float64)
    with pytest.raises(UnsupportedOpError, match=pattern) as info:
        build(model, "x", "y")
    assert case.ops[0] in info.value.missing_ops
