"""Forward mode at x with deviation symbols (fimaudit/certify/symbols.py) against exact Jacobians.

A ReLU MLP whose Jacobian at any point is a product of matrices computed here in numpy: for
points of the ball (random, on the boundary, and for every unstable ReLU the point that pushes
it furthest across its kink) the logits' gradients stay within G and the Jacobian's move within
the symbol deviation bound, for plain and weighted rows, and the hidden pre-activations within
their boxes, with symbols as rows and with every symbol carried loose.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.certify import symbols
from fimaudit.certify.certifier import reference_differences
from fimaudit.certify.propagate import InputSet, forward
from fimaudit.graph.view import GraphView
from tests.certify.sampling import ball_points, project

SIZES = (6, 16, 16, 12, 5)


def _weights(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), 0.1 * rng.standard_normal(n_out))
            for n_in, n_out in zip(SIZES[:-1], SIZES[1:], strict=True)]


def _model(layers: list[tuple[np.ndarray, np.ndarray]]):
    nodes, inits, current = [], [], "x"
    for index, (weight, bias) in enumerate(layers):
        inits += [numpy_helper.from_array(weight.T.copy(), f"W{index}"), numpy_helper.from_array(bias, f"B{index}")]
        out = "y" if index == len(layers) - 1 else f"h{index}"
        nodes.append(helper.make_node("Gemm", [current, f"W{index}", f"B{index}"], [out], name=f"gemm{index}"))
        current = out
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{index}"], name=f"relu{index}"))
            current = f"r{index}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, SIZES[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, SIZES[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pre_activations(layers, x: np.ndarray) -> list[np.ndarray]:
    values, h = [], x
    for weight, bias in layers[:-1]:
        z = weight @ h + bias
        values.append(z)
        h = np.maximum(z, 0.0)
    return values


def _jacobian(layers, x: np.ndarray) -> np.ndarray:
    jac = np.eye(x.size)
    for z, (weight, _) in zip(_pre_activations(layers, x), layers[:-1], strict=True):
        jac = (z > 0)[:, None] * (weight @ jac)
    return layers[-1][0] @ jac


def _flipping_points(layers, x: np.ndarray, eps: float, norm: float) -> np.ndarray:
    """For every hidden unit, the point of the ball that moves it furthest towards (and across) zero."""
    points, h_jac = [], np.eye(x.size)
    for z, (weight, _) in zip(_pre_activations(layers, x), layers[:-1], strict=True):
        rows = weight @ h_jac
        for value, gradient in zip(z, rows, strict=True):
            if not np.any(gradient):
                continue
            direction = -np.sign(value) * (np.sign(gradient) if np.isinf(norm) else gradient / np.linalg.norm(gradient))
            points.append(x + eps * direction)
        h_jac = (z > 0)[:, None] * rows
    return project(np.array(points), x, eps, norm)


@pytest.mark.parametrize("norm", [2.0, np.inf], ids=["l2", "linf"])
@pytest.mark.parametrize("limit", [symbols.SYMBOL_LIMIT, 0], ids=["rows", "loose"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_and_deviation_hold_at_sampled_and_flipping_points(norm: float, limit: int, seed: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(symbols, "SYMBOL_LIMIT", limit)
    layers = _weights(seed)
    rng = np.random.default_rng(seed + 10)
    x = rng.standard_normal(SIZES[0])
    eps = 0.15 if norm == 2.0 else 0.06
    view = GraphView.from_model(_model(layers), "x", outputs=["y"], sample_shape=(SIZES[0],))
    ahead = forward(view, "y", InputSet(x[None], eps, norm))
    linearised = ahead.linearised
    assert linearised is not None
    moving = sum(int(((ctx.boxes[0].lo < 0) & (ctx.boxes[0].hi > 0)).sum())
                 for ctx in ahead.contexts if ctx.node.op_type == "Relu")
    assert moving > 0  # the ball reaches kinks: symbols are exercised
    assert (linearised.symbols > 0) == (limit > 0)
    logits = layers[-1][0] @ np.maximum(_pre_activations(layers, x)[-1], 0.0) + layers[-1][1]
    combination = reference_differences(logits)
    deviation = linearised.deviation("y", combination)
    gradient_bound = linearised.bounds["y"].reshape(-1)
    weights = rng.uniform(0.1, 1.0, SIZES[-1])
    plain, weighted = deviation.bound(), deviation.bound(weights)
    centre = _jacobian(layers, x)
    points = np.concatenate([ball_points(rng, x, eps, norm, 400), _flipping_points(layers, x, eps, norm)])
    q = 1 if np.isinf(norm) else 2
    worst = 0.0
    for point in points:
        for index, value in enumerate(_pre_activations(layers, point)):
            box = ahead.boxes[f"h{index}"]
            assert np.all(box.lo.reshape(-1) <= value) and np.all(value <= box.hi.reshape(-1))
        jac = _jacobian(layers, point)
        assert np.all(np.linalg.norm(jac, ord=q, axis=1) <= gradient_bound)
        move = combination @ (jac - centre)
        worst = max(worst, float(np.linalg.norm(move, 2)))
        assert np.linalg.norm(move, 2) <= plain
        assert np.linalg.norm(weights[:, None] * move, 2) <= weighted
    assert worst > 0  # some sampled point changed the activation pattern


def test_symbols_narrow_the_ranges_interval_forward_mode_leaves() -> None:
    """The tightening this pass exists for: fewer ReLUs look unstable than with interval arithmetic alone."""
    layers = _weights(3)
    x = np.random.default_rng(4).standard_normal(SIZES[0])
    view = GraphView.from_model(_model(layers), "x", outputs=["y"], sample_shape=(SIZES[0],))

    def unstable(tangents: bool) -> int:
        ahead = forward(view, "y", InputSet(x[None], 0.1, 2.0), tangents=tangents)
        return sum(int(((ctx.boxes[0].lo < 0) & (ctx.boxes[0].hi > 0)).sum())
                   for ctx in ahead.contexts if ctx.node.op_type == "Relu")

    assert unstable(True) < unstable(False)


def test_a_memory_budget_below_one_stack_falls_back_to_interval_ranges() -> None:
    """Over the budget both forward modes stop (never allocate past it): wider ranges, still certified."""
    from fimaudit.certify.certifier import stack_limit

    layers = _weights(5)
    x = np.random.default_rng(6).standard_normal(SIZES[0])
    view = GraphView.from_model(_model(layers), "x", outputs=["y"], sample_shape=(SIZES[0],))
    assert stack_limit(1 << 20) == (1 << 20) // 32
    tight = forward(view, "y", InputSet(x[None], 0.1, 2.0))
    capped = forward(view, "y", InputSet(x[None], 0.1, 2.0), stack_limit=SIZES[0] * SIZES[0] * 2)
    assert tight.linearised is not None and capped.linearised is None and capped.upstream is None
    assert np.all(capped.boxes["y"].hi - capped.boxes["y"].lo >= tight.boxes["y"].hi - tight.boxes["y"].lo)
