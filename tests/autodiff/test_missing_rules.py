"""What the registry still lacks, listed in one place, and refused loudly by name.

``STILL_MISSING`` is the registry's completeness list for the ops of issue 16 item 7 that have no
rule: the test fails when one of them gains a rule (update the list and add an op case). Their
static forms are lowered into ops with rules (fimaudit/autodiff/lowering/); ``REFUSED_FORMS``
lists the forms that still have no path, each refused with an UnsupportedOpError naming the op,
the node and the reason, never a wrong gradient. Einsum's stated limits (diagonals, ellipsis) are
refused the same way.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fimaudit.autodiff import registry
from fimaudit.autodiff.build import build_jvp_model, build_vjp_model
from fimaudit.autodiff.lowering import lowered_ops
from fimaudit.errors import UnsupportedOpError
from tests.autodiff import lowering_models
from tests.autodiff.opcases import OpCase, single

#: Ops of item 7 with no gradient rule. Their static forms are LOWERED before gradient analysis
#: (fimaudit/autodiff/lowering/: If with a constant condition, Loop with a constant trip count,
#: Scan with static lengths, LSTM/GRU/RNN at a static sequence length; tests/autodiff/test_lowering.py);
#: the forms in REFUSED_FORMS below still have no path and are refused by name with the reason.
STILL_MISSING = ["GRU", "If", "LSTM", "Loop", "RNN", "Scan"]

_rng = np.random.default_rng(5)


REFUSED: list[tuple[OpCase, str]] = [
    (single("Einsum/diagonal", "Einsum", (3, 3), equation="ii->i", opset=12), "Einsum.*repeated"),
    (single("Einsum/ellipsis", "Einsum", (2, 3, 4), ["x", "w"], {"w": _rng.normal(size=(4, 5))}, equation="...j,jk->...k", opset=12), "Einsum.*ellipsis"),
]


def _symbolic(model: onnx.ModelProto, axis: int) -> onnx.ModelProto:
    """x's dimension ``axis`` made symbolic (a sequence length known only at run time)."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[axis]
    dim.Clear()
    dim.dim_param = "S"
    return model


def _with_lens(model: onnx.ModelProto, lens: list[int]) -> onnx.ModelProto:
    model.graph.initializer.append(numpy_helper.from_array(np.array(lens, dtype=np.int32), "lens"))
    model.graph.node[0].input[4] = "lens"  # x, W, R, B, sequence_lens, initial_h
    return model


#: (id, model, pattern of the refusal, op): forms of the lowered ops that stay without a path.
REFUSED_FORMS: list[tuple[str, Callable[[], onnx.ModelProto], str, str]] = [
    ("If/run-time-condition", lambda: lowering_models.if_constant(True, runtime=True), r"If node 'the_if'.*condition .* computed at run time", "If"),
    ("Loop/run-time-trip-count", lambda: lowering_models.loop(runtime_trips=True), r"Loop node 'the_loop'.*trip count .* computed at run time", "Loop"),
    ("Loop/while-condition", lambda: lowering_models.loop(while_condition=True), r"Loop node 'the_loop'.*condition output .* computed at run time", "Loop"),
    ("Scan/run-time-length", lambda: _symbolic(lowering_models.scan(), 1), r"Scan node 'the_scan'.*not static", "Scan"),
    ("LSTM/clip", lambda: lowering_models.recurrent("LSTM", clip=2.0), r"LSTM node 'the_lstm'.*'clip'", "LSTM"),
    ("LSTM/input_forget", lambda: lowering_models.recurrent("LSTM", input_forget=1), r"LSTM node 'the_lstm'.*'input_forget'", "LSTM"),
    ("LSTM/run-time-length", lambda: _symbolic(lowering_models.recurrent("LSTM"), 0), r"LSTM node 'the_lstm'.*sequence length is not static", "LSTM"),
    ("GRU/activation", lambda: lowering_models.recurrent("GRU", activations=["HardSigmoid", "Tanh"]), r"GRU node 'the_gru'.*activation 'HardSigmoid'", "GRU"),
    ("RNN/short-sequence_lens", lambda: _with_lens(lowering_models.recurrent("RNN", seq=4, batch=2), [4, 2]), r"RNN node 'the_rnn'.*sequence_lens \[4, 2\]", "RNN"),
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


def test_every_op_without_a_rule_is_lowered_in_its_static_forms() -> None:
    assert sorted(STILL_MISSING) == lowered_ops()


@pytest.mark.parametrize("case", REFUSED_FORMS, ids=[case[0] for case in REFUSED_FORMS])
@pytest.mark.parametrize("build", [build_vjp_model, build_jvp_model], ids=["vjp", "jvp"])
def test_unlowerable_forms_are_refused_by_name_and_reason(case, build) -> None:
    _, model, pattern, op = case
    with pytest.raises(UnsupportedOpError, match=pattern) as info:
        build(model(), "x", "y")
    assert info.value.missing_ops == [op]
