"""Folding chains of scalings (fimaudit/autodiff/fold_scalings.py): what folds, what must not, same values.

The op cases (test_rules.py) check every rule's gradients against finite differences and the
adjoint identity with the folding on; here: the graph shapes it promises, and random chains whose
folded and unfolded values agree to rounding.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.autodiff import fold_scalings as folding
from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, OUTPUT_TANGENT, TANGENT, build_jvp_model, build_vjp_model
from tests.autodiff.test_rules import _ort


def _on_seed(model: onnx.ModelProto, seed: str) -> list[str]:
    """Op types of the nodes that depend on ``seed`` (the gradient half's work), Identity aside."""
    reached, ops = {seed}, []
    for node in model.graph.node:
        if any(name in reached for name in node.input):
            reached.update(node.output)
            if node.op_type != "Identity":
                ops.append(node.op_type)
    return ops


def _erf_gelu() -> onnx.ModelProto:
    """y = x * 0.5 * (1 + erf(x / sqrt 2)) as TorchScript exports GELU (no Gelu op before opset 20)."""
    nodes = [
        helper.make_node("Div", ["x", "root2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["shifted"]),
        helper.make_node("Mul", ["x", "shifted"], ["product"]),
        helper.make_node("Mul", ["product", "half"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, dtype=np.float32), name)
             for name, v in [("root2", math.sqrt(2.0)), ("one", 1.0), ("half", 0.5)]]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _gelu_derivative(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def test_a_decomposed_gelu_leaves_one_mul_on_the_gradient_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _erf_gelu()
    vjp, jvp = build_vjp_model(model, "x", "y"), build_jvp_model(model, "x", "y")
    assert _on_seed(vjp, COTANGENT) == ["Mul"], _on_seed(vjp, COTANGENT)
    assert _on_seed(jvp, TANGENT) == ["Mul"], _on_seed(jvp, TANGENT)
    monkeypatch.setattr(folding, "MIN_OPSET", 10**6)  # folding off: what the rules emit one by one
    assert len(_on_seed(build_vjp_model(model, "x", "y"), COTANGENT)) >= 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    u = rng.normal(size=(2, 3, 5)).astype(np.float32)
    pulled = _ort(vjp).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0]
    pushed = _ort(jvp).run([OUTPUT_TANGENT], {"x": x, TANGENT: u})[0]
    expected = u * _gelu_derivative(x.astype(np.float64))
    np.testing.assert_allclose(pulled, expected, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(pushed, expected, rtol=2e-6, atol=1e-7)


def test_relu_then_pool_masks_become_one_factor() -> None:
    """Relu's mask and a tiling MaxPool's winner mask: one Mul over the gradient, not two."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "relu_pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    vjp = build_vjp_model(model, "x", "y")
    assert _on_seed(vjp, COTANGENT).count("Mul") == 1, _on_seed(vjp, COTANGENT)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    u = rng.normal(size=(3, 1, 2, 2, 2)).astype(np.float32)
    pulled = _ort(vjp).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0]
    # Each window's gradient lands on its largest entry, when that entry is positive.
    windows = x.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 2, 4)
    expected = np.zeros((3, 1, 2, 2, 2, 4), dtype=np.float32)
    winner = windows.argmax(-1)
    for m, c, i, j in itertools.product(range(3), range(2), range(2), range(2)):
        k = winner[0, c, i, j]
        if windows[0, c, i, j, k] > 0:
            expected[m, 0, c, i, j, k] = u[m, 0, c, i, j]
    expected = expected.reshape(3, 1, 2, 2, 2, 2, 2).transpose(0, 1, 2, 3, 5, 4, 6).reshape(3, 1, 2, 4, 4)
    np.testing.assert_array_equal(pulled, expected)


# ---- random chains: folded and unfolded agree --------------------------------------------------
def _chain(rng: np.random.Generator, steps: int) -> tuple[list[onnx.NodeProto], list[str]]:
    """Random scalings of g by forward tensors f0..f3: Mul/Div/Neg steps, Add/Sub of two branches."""
    nodes: list[onnx.NodeProto] = []
    live = ["g"]
    for step in range(steps):
        out = f"t{step}"
        kind = rng.choice(["mul", "mul_left", "div", "neg", "add", "sub", "branch"])
        source = str(live[-1])
        factor = f"f{rng.integers(4)}"
        if kind == "mul":
            nodes.append(helper.make_node("Mul", [source, factor], [out]))
        elif kind == "mul_left":
            nodes.append(helper.make_node("Mul", [factor, source], [out]))
        elif kind == "div":
            nodes.append(helper.make_node("Div", [source, factor], [out]))
        elif kind == "neg":
            nodes.append(helper.make_node("Neg", [source], [out]))
        elif kind == "branch":  # two scalings of the same tensor, joined: the distributive case
            a, b = f"{out}_a", f"{out}_b"
            nodes.append(helper.make_node("Mul", [source, factor], [a]))
            nodes.append(helper.make_node("Mul", [f"f{rng.integers(4)}", source], [b]))
            nodes.append(helper.make_node(str(rng.choice(["Add", "Sub"])), [a, b], [out]))
        else:  # a node that reads two different tensors of the chain: no fold across it
            other = str(live[rng.integers(len(live))])
            nodes.append(helper.make_node("Add" if kind == "add" else "Sub", [source, other], [out]))
        live.append(out)
    nodes.append(helper.make_node("Identity", [live[-1]], ["result"]))
    return nodes, live


def _run_chain(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray]) -> np.ndarray:
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)) for name, value in feeds.items()]
    graph = helper.make_graph(nodes, "chain", inputs, [helper.make_tensor_value_info("result", TensorProto.FLOAT, [3, 2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)  # the folded list stays topologically sorted and well formed
    return _ort(model).run(["result"], feeds)[0]


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_fold_to_the_same_values(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes, _ = _chain(rng, int(rng.integers(2, 9)))
    # Factors of several broadcast shapes against g [M, 2, 3, 4] (no M axis: forward tensors).
    shapes = [(2, 3, 4), (3, 1), (4,), ()]
    feeds = {"g": rng.normal(size=(3, 2, 3, 4)).astype(np.float32)}
    for index, shape in enumerate(shapes):
        feeds[f"f{index}"] = np.asarray(rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape), dtype=np.float32)
    before = _run_chain(list(nodes), feeds)
    folded = list(nodes)
    counter = itertools.count()
    folds = folding.fold_scalings(folded, "g", {"result"}, lambda hint: f"{hint}_{next(counter)}")
    after = _run_chain(folded, feeds)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert folds == 0 or _gradient_work(folded) < _gradient_work(nodes)  # a fold takes work off the gradient side


def _gradient_work(nodes: list[onnx.NodeProto]) -> int:
    """Nodes that the result needs and that read g (directly or not): run per product."""
    producer = {node.output[0]: node for node in nodes}
    needed, stack = set(), ["result"]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    reached, work = {"g"}, 0
    for node in nodes:
        if any(name in reached for name in node.input):
            reached.update(node.output)
            work += id(node) in needed and node.op_type != "Identity"
    return work
