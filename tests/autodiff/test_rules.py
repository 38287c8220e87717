"""Every gradient rule against the adjoint identity, finite differences and ONNX Runtime.

ONE table (collected from tests/autodiff/cases_*.py, format in opcases.py) drives ONE test. Per case:
1. float64, onnx.reference.ReferenceEvaluator (a few ops corrected: reference_ops.py) running the generated VJP and JVP models:
   the adjoint identity <u, VJP(v-side)> = <JVP(v), u> to 1e-9, and the JVP against central
   finite differences of the forward model (h = 1e-6 relative; case tolerance ``fd_rtol``).
2. float32, ONNX Runtime running the float32 variant: VJP and JVP equal the float64 reference
   within ``f32_rtol`` (default 1e-4, relative to the Frobenius norm of the reference).
A second test fails if a registered rule has no case, or a VJP rule has no JVP twin.
"""

from __future__ import annotations

import importlib
import pkgutil
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from fimaudit.autodiff import registry
from fimaudit.autodiff.build import COTANGENT, TANGENT, build_jvp_model, build_vjp_model
from tests.autodiff.opcases import OpCase
from tests.autodiff.reference_ops import EXACT_OPS

LEAD = 3  # M: cotangents/tangents per run


def _collect() -> list[OpCase]:
    cases: list[OpCase] = []
    folder = Path(__file__).parent
    for module in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        if module.name.startswith("cases_"):
            cases.extend(importlib.import_module(f"tests.autodiff.{module.name}").CASES)
    return cases


CASES = _collect()


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


def _reference(model) -> ReferenceEvaluator:
    """onnx's float64 evaluator, with exact Erf and opset-faithful Softmax (reference_ops.py)."""
    return ReferenceEvaluator(model, new_ops=EXACT_OPS)


def _ort(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule(case: OpCase) -> None:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))  # stable across processes (hash() is salted)
    model64 = case.build(np.float64)
    x = case.sample(rng, case.x_shape).astype(np.float64)
    forward = _reference(model64)
    (y,) = forward.run(None, {"x": x})
    u = rng.normal(size=(LEAD, *y.shape))
    v = rng.normal(size=(LEAD, *x.shape))

    vjp64, jvp64 = build_vjp_model(model64, "x", "y"), build_jvp_model(model64, "x", "y")
    y_vjp, pulled = _reference(vjp64).run(None, {"x": x, COTANGENT: u})
    y_jvp, pushed = _reference(jvp64).run(None, {"x": x, TANGENT: v})
    assert pulled.shape == (LEAD, *x.shape) and pushed.shape == (LEAD, *y.shape)
    np.testing.assert_allclose(y_vjp, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_jvp, y, rtol=1e-12, atol=1e-12)

    # Adjoint identity, per cotangent row.
    left = (u * pushed).reshape(LEAD, -1).sum(axis=1)
    right = (pulled * v).reshape(LEAD, -1).sum(axis=1)
    np.testing.assert_allclose(left, right, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(left).max()))

    # Central finite differences in float64 along each tangent.
    h = 1e-6 * max(1.0, float(np.abs(x).max()))
    differences = np.stack(
        [(forward.run(None, {"x": x + h * v[m]})[0] - forward.run(None, {"x": x - h * v[m]})[0]) / (2 * h) for m in range(LEAD)]
    )
    assert _relative(pushed, differences) < case.fd_rtol, f"JVP vs finite differences: {_relative(pushed, differences):.2e}"

    # ONNX Runtime, float32.
    model32 = case.build(np.float32)
    x32 = x.astype(np.float32)
    _, pulled32 = _ort(build_vjp_model(model32, "x", "y")).run(None, {"x": x32, COTANGENT: u.astype(np.float32)})
    _, pushed32 = _ort(build_jvp_model(model32, "x", "y")).run(None, {"x": x32, TANGENT: v.astype(np.float32)})
    assert _relative(pulled32, pulled) < case.f32_rtol, f"ORT float32 VJP: {_relative(pulled32, pulled):.2e}"
    assert _relative(pushed32, pushed) < case.f32_rtol, f"ORT float32 JVP: {_relative(pushed32, pushed):.2e}"


def test_every_rule_has_a_case_and_a_twin() -> None:
    covered = {op for case in CASES for op in case.ops}
    rules = set(registry.vjp_ops()) | set(registry.jvp_ops())
    assert sorted(rules - covered) == [], "registered rules without an op case"
    assert set(registry.vjp_ops()) == set(registry.jvp_ops()), "every VJP rule needs its JVP twin"
