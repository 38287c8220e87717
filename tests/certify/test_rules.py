"""Each certify rule against dense sampling of a ball, in float64 (onnx's ReferenceEvaluator).

For sampled x' in the ball: the output lies in the certified box; the Jacobian (central
differences, whose error ~1e-9 is far below the tolerance stated below) lies in the interval
Jacobian; its deviation from the Jacobian at x is within the telescoped norm bound.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from fimaudit.certify.propagate import InputSet, propagate
from fimaudit.certify.registry import supported_ops
from fimaudit.graph.view import GraphView
from tests.bounds.reference64 import Erf, Gelu
from tests.certify.cases import CASES, Case
from tests.certify.sampling import ball_points

#: Central differences with step 1e-6 in float64 on values of size ~10: rounding error ~1e-16 * 10 / 1e-6
#: = 1e-9 per entry, truncation 0 for piecewise-linear ops and ~1e-12 for the smooth ones.
FD_ERROR = 1e-8
STEP = 1e-6


class HardSwish(OpRun):
    """onnx's reference HardSwish rounds through float32 here: not in this test."""

    def _run(self, x):  # noqa: D102
        return ((x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)).astype(x.dtype),)


def test_every_rule_has_a_case() -> None:
    covered = {op for case in CASES for op in case.ops}
    assert set(supported_ops()) <= covered, sorted(set(supported_ops()) - covered)


def _evaluate(evaluator: ReferenceEvaluator, x: np.ndarray) -> np.ndarray:
    return np.asarray(evaluator.run(["y"], {"x": x})[0], dtype=np.float64)


def _jacobian(evaluator: ReferenceEvaluator, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    rows = []
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = STEP
        plus = _evaluate(evaluator, (flat + step).reshape(x.shape))
        minus = _evaluate(evaluator, (flat - step).reshape(x.shape))
        rows.append(((plus - minus) / (2 * STEP)).reshape(-1))
    return np.array(rows).T  # [outputs, inputs]


@pytest.mark.parametrize("norm", [2.0, np.inf], ids=["l2", "linf"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_rule_encloses_sampled_values_and_jacobians(case: Case, norm: float) -> None:
    rng = np.random.default_rng(hash(case.name) % 2**32)
    model = case.model()
    evaluator = ReferenceEvaluator(model, new_ops=[Erf, Gelu, HardSwish])
    view = GraphView.from_model(model, "x", outputs=["y"])
    centre = rng.standard_normal(case.input_shape)
    eps = 0.6 if norm == 2.0 else 0.3
    result = propagate(view, "y", InputSet(centre, eps, norm), lambda z: np.eye(z.size))
    box = result.logits
    np.testing.assert_allclose(box.at, _evaluate(evaluator, centre), rtol=1e-12, atol=1e-12)
    rows_c = result.rows.centre.reshape(result.rows.centre.shape[0], -1)
    rows_r = result.rows.radius.reshape(rows_c.shape)
    np.testing.assert_allclose(rows_c, _jacobian(evaluator, centre), atol=1e-6)  # at x (no kink within STEP)
    for point in ball_points(rng, centre, eps, norm, 12, shrink=0.98):
        value = _evaluate(evaluator, point)
        assert np.all(box.lo <= value) and np.all(value <= box.hi), case.name
        jac = _jacobian(evaluator, point)
        excess = np.abs(jac - rows_c) - rows_r
        assert np.all(excess <= FD_ERROR), (case.name, float(excess.max()))
        deviation = np.linalg.norm(jac - rows_c, 2)
        assert deviation <= result.telescoped + FD_ERROR * jac.size, case.name
