"""Back-substitution of the ReLU relaxations (fimaudit/certify/substitution.py).

The lines must bracket each remainder over its range; on a ReLU MLP the substituted ranges must
hold the hidden pre-activations at every point of the ball, adversarial points included
(projected gradient ascent and descent on each entry whose range the substitution narrowed), and
be narrower than the ranges without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.certify import propagate
from fimaudit.certify.intervals import Box
from fimaudit.certify.propagate import InputSet, forward
from fimaudit.certify.registry import NodeContext
from fimaudit.certify.rules.activations import kink_relaxation
from fimaudit.graph.view import GraphView
from tests.certify.sampling import ball_points, project
from tests.certify.test_symbols import SIZES, _model, _pre_activations, _weights


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_kink_lines_bracket_the_remainder(alpha: float) -> None:
    rng = np.random.default_rng(0)
    lo = np.concatenate([rng.uniform(-2, 0, 40), [0.0, -1.0, 0.5, -3.0]])
    hi = np.concatenate([rng.uniform(0, 2, 40), [1.0, 0.0, 2.0, -1.0]])
    at = np.concatenate([rng.uniform(lo[:40], hi[:40]), [0.0, -0.5, 1.0, -2.0]])  # on the kink, off, on, off
    ctx = NodeContext(None, None, [Box(at, lo, hi)])  # type: ignore[arg-type]
    s0 = np.where(at > 0, 1.0, alpha)
    ctx.state["slopes"] = (s0, None, None)
    lines = kink_relaxation(ctx, alpha)
    z = lo[None] + (hi - lo)[None] * np.linspace(0.0, 1.0, 201)[:, None]
    f = np.maximum(z, alpha * z)
    remainder = f - np.maximum(at, alpha * at)[None] - s0[None] * (z - at[None])
    upper = lines.upper_slope[None] * z + lines.upper_intercept[None]
    lower = lines.lower_slope[None] * z + lines.lower_intercept[None]
    assert np.all(lower <= remainder + 1e-14) and np.all(remainder <= upper + 1e-14)  # the check's own rounding
    crossing = (lo < 0) & (hi > 0)
    assert np.all(upper[:, ~crossing] - lower[:, ~crossing] <= 1e-12)  # exact where no kink is crossed


def _ascent(layers, x: np.ndarray, eps: float, layer: int, unit: int, sign: float, steps: int = 60) -> np.ndarray:
    """Projected gradient ascent on sign * z[layer][unit] inside the l2 ball (exact gradients of the MLP)."""
    point = x.copy()
    for step in range(steps):
        jac, h = np.eye(x.size), point
        for index, (weight, bias) in enumerate(layers[: layer + 1]):
            z = weight @ h + bias
            jac = weight @ jac
            if index < layer:
                jac, h = (z > 0)[:, None] * jac, np.maximum(z, 0.0)
        gradient = sign * jac[unit]
        point = project((point + eps * 0.2 * (0.9**step) * gradient / max(np.linalg.norm(gradient), 1e-30))[None],
                        x, eps, 2.0)[0]
    return point


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_substituted_ranges_hold_at_adversarial_points_and_are_narrower(seed: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    layers = _weights(seed)
    x = np.random.default_rng(seed + 10).standard_normal(SIZES[0])
    eps = 0.3
    view = GraphView.from_model(_model(layers), "x", outputs=["y"], sample_shape=(SIZES[0],))
    tight = forward(view, "y", InputSet(x[None], eps, 2.0))
    monkeypatch.setattr(propagate, "_relaxed_inputs", lambda nodes: set())
    plain = forward(view, "y", InputSet(x[None], eps, 2.0))
    narrowed = 0
    rng = np.random.default_rng(seed)
    points = list(ball_points(rng, x, eps, 2.0, 300))
    for layer in range(len(SIZES) - 2):
        name = f"h{layer}"
        box, wide = tight.boxes[name], plain.boxes[name]
        assert np.all(box.lo >= wide.lo) and np.all(box.hi <= wide.hi)
        changed = np.flatnonzero(((box.lo > wide.lo) | (box.hi < wide.hi)).reshape(-1))
        narrowed += changed.size
        for unit in changed:
            points += [_ascent(layers, x, eps, layer, unit, sign) for sign in (1.0, -1.0)]
    assert narrowed > 0  # the substitution did something on this network
    for point in points:
        for layer, value in enumerate(_pre_activations(layers, point)):
            box = tight.boxes[f"h{layer}"]
            assert np.all(box.lo.reshape(-1) <= value) and np.all(value <= box.hi.reshape(-1))


def test_substitution_in_chunks_under_a_small_memory_budget_gives_the_same_ranges() -> None:
    """A budget that fits the stacks but only a few columns at a time: the same boxes, entry by entry."""
    layers = _weights(0)
    x = np.random.default_rng(10).standard_normal(SIZES[0])
    view = GraphView.from_model(_model(layers), "x", outputs=["y"], sample_shape=(SIZES[0],))
    roomy = forward(view, "y", InputSet(x[None], 0.3, 2.0))
    assert roomy.linearised is not None
    rows = roomy.linearised.d + roomy.linearised.symbols  # the most rows any stack reached
    limit = rows * max(SIZES)  # every stack fits; the substitution takes max(SIZES) // 4 columns at a time
    tight = forward(view, "y", InputSet(x[None], 0.3, 2.0), stack_limit=limit)
    assert tight.linearised is not None
    for name in ("h0", "h1", "h2"):
        np.testing.assert_array_equal(tight.boxes[name].lo, roomy.boxes[name].lo)
        np.testing.assert_array_equal(tight.boxes[name].hi, roomy.boxes[name].hi)
