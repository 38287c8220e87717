"""Bounds of the mobilenet family (inverted residuals with squeeze-excitation gates): certified
above the float64 lambda_max at sampled points and at points chosen by projected gradient ascent
on lambda_max, without tolerance; the gate's composition (compose.inverted_residual_factor)
is finite on a bounded domain and null, with its reason, without one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fimaudit.bounds.fisher_bound import FisherBounds
from fimaudit.graph.architecture import recognise_architecture
from tests.bounds.reference64 import Reference64
from tests.graph.test_architecture_families import mobilenet

SHAPE = (2, 4, 4)
BOX = (-1.0, 1.0)


def _plain(bound: Any) -> dict[str, Any]:
    return bound.to_dict() if hasattr(bound, "to_dict") else bound


def _setup(act: str, se: str):
    model = mobilenet(act, se, shape=(1, *SHAPE))
    logits = model.graph.output[0].name
    architecture = recognise_architecture(model)
    bounds = FisherBounds(model, "x", logits, SHAPE, 3, input_range=BOX)
    bounds.learn_shapes(np.zeros(SHAPE, np.float32))
    return model, logits, architecture, bounds


def _ascend(reference: Reference64, start: np.ndarray, steps: int = 4, rate: float = 0.25, h: float = 1e-4) -> np.ndarray:
    """Projected (sign-)gradient ascent on lambda_max inside the box, gradients by central differences."""
    x = start.astype(np.float64)
    for _ in range(steps):
        flat = x.reshape(-1)
        grad = np.empty_like(flat)
        for i in range(flat.size):
            e = np.zeros_like(flat)
            e[i] = h
            grad[i] = (reference.lambda_max((flat + e).reshape(x.shape)) - reference.lambda_max((flat - e).reshape(x.shape))) / (2 * h)
        x = np.clip(x + rate * np.sign(grad).reshape(x.shape), *BOX)
    return x


@pytest.mark.parametrize("act,se", [("hardswish", "hardsigmoid"), ("silu", "sigmoid")], ids=["mobilenetv3", "efficientnet"])
def test_mobilenet_bounds_are_above_the_float64_lambda_max(act: str, se: str) -> None:
    model, logits, architecture, bounds = _setup(act, se)
    assert architecture.family == "mobilenet"
    result = _plain(bounds.global_bound("mobilenet", architecture))
    assert result["value"] is not None, result["reason"]
    reference = Reference64(model, "x", logits)
    rng = np.random.default_rng(3)
    points = [rng.uniform(*BOX, SHAPE) for _ in range(3)]
    points += [_ascend(reference, points[0])]
    points += [np.where(rng.random(SHAPE) < 0.5, BOX[0], BOX[1])]  # a vertex of the box
    for x in points:
        exact = reference.lambda_max(x)
        row = reference.logits(x[None])[0]
        sample = _plain(bounds.sample_bound(x.astype(np.float32), row, exact))
        assert sample["value"] is not None, sample.get("reason")
        assert sample["value"] >= exact
        assert result["value"] >= exact


def test_gate_composition_is_finite_on_a_box_and_null_with_its_reason_without() -> None:
    model, logits, architecture, bounds = _setup("hardswish", "hardsigmoid")
    blocks = _plain(bounds.global_bound("mobilenet", architecture))["blocks"]
    gated = [b["composition"] for b in blocks if b["composition"].get("gate")]
    assert len(gated) == 2
    for composition in gated:
        gate = composition["gate"]
        assert gate["sup_gate"] == 1.0  # HardSigmoid's range
        assert gate["factor"] == pytest.approx(1.0 + gate["features_size"] * gate["gate_lipschitz"])
        assert composition["factor"] is not None
        assert composition["factor"] >= (1.0 if composition["residual"] else 0.0)
    unbounded = FisherBounds(model, "x", logits, SHAPE, 3)
    unbounded.learn_shapes(np.zeros(SHAPE, np.float32))
    result = _plain(unbounded.global_bound("mobilenet", architecture))
    assert result["value"] is None and "bounded input domain" in result["reason"]
    for block in result["blocks"]:
        if block["composition"].get("gate"):
            assert block["composition"]["factor"] is None
            assert "no global Lipschitz constant" in block["composition"]["reason"]
