"""Every bound rule against the true operator norm of its layer, computed densely in float64.

For each case of tests/bounds/cases.py:
- global: the composed constant is >= the largest Jacobian norm found at the case's points
  (for linear cases: the exact norm of the dense matrix, and within the case's factor);
- local (rules that read activations): at each point, the local constant is >= the norm of the
  Jacobian there, and never above the global constant (times the local rounding margin);
- cases without a global constant (Exp, Log, products of unbounded activations) must say so:
  a null global constant with the reason, never a finite number.
The float64 central-difference reference is accurate to ~1e-10 relative; a bound may sit
exactly on the truth (ReLU: 1), so the comparison allows the reference that rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from fimaudit.bounds.compose import LOCAL_MARGIN, BoundEngine
from fimaudit.bounds.registry import supported_ops
from fimaudit.graph.architecture import prepare_view
from tests.bounds.cases import CASES, Case
from tests.bounds.reference64 import Erf, Gelu

REFERENCE_RTOL = 1e-9
INTERNAL_OPS = {"FoldedBatchNorm"}  # exercised through fold_batchnorms (test_folding.py)


class OrtEvaluator:
    """ONNX Runtime in float64, for ops the reference runtime gets wrong (same run() API)."""

    def __init__(self, case: Case) -> None:
        model = case.model()
        self.outputs = [o for node in model.graph.node for o in node.output if o]
        for name in self.outputs:
            if name != "y":
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.DOUBLE, None))
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(self, names, feeds, intermediate: bool = False):
        if intermediate:
            return dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
        return self.session.run(names, feeds)


def evaluator(case: Case):
    if case.runtime == "ort":
        return OrtEvaluator(case)
    return ReferenceEvaluator(case.model(), new_ops=[Erf, Gelu])


def run(ev, x: np.ndarray) -> np.ndarray:
    return np.asarray(ev.run(["y"], {"x": x})[0], dtype=np.float64).reshape(-1)


def jacobian_norm(ev, case: Case, x: np.ndarray) -> float:
    """||J(x)||_2 by central differences (elementwise graphs: the largest |f'| on the diagonal)."""
    if case.pointwise:
        step = 1e-5
        return float(np.abs((run(ev, x + step) - run(ev, x - step)) / (2 * step)).max())
    return float(np.linalg.norm(jacobian(ev, x, linear=False), 2))


def jacobian(ev, x: np.ndarray, linear: bool, step: float = 1e-5) -> np.ndarray:
    flat = x.reshape(-1)
    columns = []
    base = run(ev, x) if linear else None
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = 1.0 if linear else step
        if linear:
            columns.append(run(ev, (flat + e).reshape(x.shape)) - base)
        else:
            columns.append((run(ev, (flat + e).reshape(x.shape)) - run(ev, (flat - e).reshape(x.shape))) / (2 * step))
    return np.stack(columns, axis=1)


def engine_for(case: Case) -> BoundEngine:
    view, _ = prepare_view(case.model(), "x", ["y"])
    return BoundEngine(view)


def test_every_rule_has_a_case() -> None:
    covered = {case.op for case in CASES}
    missing = set(supported_ops()) - covered - INTERNAL_OPS
    assert not missing, f"bound rules without a test case: {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_global_bound_covers_the_true_norm(case: Case) -> None:
    engine = engine_for(case)
    propagation = engine.run_global()
    bound = propagation.of("y")
    assert case.op in {r.op for r in propagation.records} | {p.op for p in propagation.problems}, "the op under test was not reached"
    if not case.has_global:
        assert bound is None
        assert propagation.problems and all(p.reason for p in propagation.problems)
        return
    assert bound is not None, [p.reason for p in propagation.problems]
    ev = evaluator(case)
    if case.linear:
        true = float(np.linalg.norm(jacobian(ev, np.zeros(case.input_shape), linear=True), 2))
        assert bound >= true * (1 - REFERENCE_RTOL)
        if case.factor is not None:
            assert bound <= case.factor * true + 1e-12
        return
    largest = max(jacobian_norm(ev, case, x) for x in case.sample_points())
    assert bound >= largest * (1 - REFERENCE_RTOL)


LOCAL_CASES = [c for c in CASES if not c.linear]


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[c.name for c in LOCAL_CASES])
def test_local_bound_covers_the_jacobian_at_each_point(case: Case) -> None:
    engine = engine_for(case)
    global_bound = engine.run_global().of("y")
    ev = evaluator(case)
    for x in case.sample_points(4):
        values = {name: np.asarray(v) for name, v in ev.run(None, {"x": x}, intermediate=True).items()}
        propagation = engine.run_local(values)
        local = propagation.of("y")
        if not case.has_local:
            assert local is None and propagation.problems
            continue
        assert local is not None
        true = jacobian_norm(ev, case, x)
        assert local >= true * (1 - REFERENCE_RTOL)
        if global_bound is not None:
            assert local <= global_bound * (1 + LOCAL_MARGIN)
