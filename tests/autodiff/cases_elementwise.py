"""Op cases for fimaudit/autodiff/rules/elementwise.py."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.autodiff.opcases import FLOAT, OpCase, chain, distinct, positive, single, weights_rng

_rng = weights_rng(1)
W23 = _rng.normal(size=(2, 3))
W3 = _rng.normal(size=(3,))
W13 = _rng.normal(size=(1, 3))
P3 = _rng.uniform(0.5, 2.0, size=(3,))
P23 = _rng.uniform(0.5, 2.0, size=(2, 3))


def _binary(op: str, **kwargs: object) -> list[OpCase]:
    """The standard broadcasting variants of a binary op."""
    weights = {"w": P23 if op in ("Div", "Pow") else W23, "v": P3 if op in ("Div", "Pow") else W3, "r": W13}
    return [
        single(f"{op}/same-shape", op, (2, 3), ["x", "w"], {"w": weights["w"]}, **kwargs),
        single(f"{op}/x-broadcast-low-rank", op, (3,), ["x", "w"], {"w": weights["w"]}, **kwargs),
        single(f"{op}/weight-broadcast", op, (2, 3), ["x", "v"], {"v": weights["v"]}, **kwargs),
        single(f"{op}/weight-first", op, (1, 3), ["w", "x"], {"w": weights["w"]}, **kwargs),
        single(f"{op}/both-x", op, (2, 3), ["x", "x"], **kwargs),
    ]


CASES: list[OpCase] = [
    *_binary("Add"),
    *_binary("Sub"),
    *_binary("Mul"),
    *[case for case in _binary("Div", sample=positive) if not case.id.endswith("both-x")],
    chain(
        "Div/both-on-path",
        lambda: [helper.make_node("Add", ["x", "w"], ["d"]), helper.make_node("Div", ["x", "d"], ["y"])],
        (2, 3),
        covers=["Div", "Add"],
        weights={"w": P23},
        sample=positive,
    ),
    single("Add/opset11", "Add", (2, 3), ["x", "v"], {"v": W3}, opset=11),
    single("Add/symbolic-batch-broadcast", "Add", (2, 3), ["x", "r"], {"r": W13}, symbolic_batch=True),
    single("Mul/symbolic-batch-weight-batched", "Mul", (1, 3), ["x", "w"], {"w": W23}, symbolic_batch=True),
    single("Mul/symbolic-batch-opset11", "Mul", (2, 3), ["x", "r"], {"r": W13}, symbolic_batch=True, opset=11),
    single("Neg", "Neg", (2, 3)),
    single("Sqrt", "Sqrt", (2, 3), sample=positive),
    single("Reciprocal", "Reciprocal", (2, 3), sample=positive),
    single("Exp", "Exp", (2, 3)),
    single("Log", "Log", (2, 3), sample=positive),
    single("Abs", "Abs", (2, 3), sample=lambda rng, s: rng.uniform(0.2, 2, s) * rng.choice([-1.0, 1.0], s)),
    single("Pow/const-exponent", "Pow", (2, 3), ["x", "e"], {"e": np.array(3.0)}, sample=positive),
    single("Pow/square", "Pow", (2, 3), ["x", "e"], {"e": np.array(2.0)}),
    single("Pow/int-exponent", "Pow", (2, 3), ["x", "e"], {"e": np.array(3, dtype=np.int64)}, opset=13),
    single("Pow/vector-exponent", "Pow", (2, 3), ["x", "e"], {"e": P3}, sample=positive),
    single("Pow/exponent-on-path", "Pow", (2, 3), ["w", "x"], {"w": P23}),
    single("Pow/both-x", "Pow", (2, 3), ["x", "x"], sample=positive),
    single("Max/binary", "Max", (2, 3), ["x", "w"], {"w": W23}, sample=distinct),
    single("Max/variadic-broadcast", "Max", (2, 3), ["x", "v", "r"], {"v": W3 + 0.01, "r": W13 - 0.02}),
    single("Max/single", "Max", (2, 3), ["x"]),
    single("Min/binary", "Min", (2, 3), ["x", "w"], {"w": W23}),
    single("Min/variadic-broadcast", "Min", (2, 3), ["v", "x", "r"], {"v": W3 + 0.01, "r": W13 - 0.02}),
    chain(
        "Max/tie",  # x and Identity(x) tie everywhere: the gradient is split evenly
        lambda: [helper.make_node("Identity", ["x"], ["c"]), helper.make_node("Max", ["x", "c"], ["y"])],
        (2, 3),
        covers=["Max", "Identity"],
    ),
    single("Sum/variadic", "Sum", (2, 3), ["x", "v", "x"], {"v": W3}),
    single("Sum/x-low-rank", "Sum", (3,), ["x", "w", "r"], {"w": W23, "r": W13}),
    single("Mean/variadic", "Mean", (2, 3), ["x", "v", "x"], {"v": W3}),
    single("Mean/x-low-rank", "Mean", (3,), ["w", "x"], {"w": W23}),
    single("Where/x-both", "Where", (2, 3), ["c", "x", "w"], {"c": np.array([True, False, True]), "w": W23}),
    single("Where/x-second-broadcast", "Where", (3,), ["c", "w", "x"], {"c": np.array([[True], [False]]), "w": W23}),
    single("Where/x-twice", "Where", (2, 3), ["c", "x", "x"], {"c": np.array([True, False, False])}),
    single("Identity", "Identity", (2, 3)),
    single("Dropout/opset11", "Dropout", (2, 3), opset=11),
    single("Dropout/opset13-mask", "Dropout", (2, 3), num_outputs=2, opset=13),
    single("Cast/same-type", "Cast", (2, 3), to=FLOAT),
    chain(
        "Cast/float16-round-trip",
        lambda: [
            helper.make_node("Mul", ["x", "w"], ["a"]),
            helper.make_node("Cast", ["a"], ["b"], to=FLOAT),
            helper.make_node("Cast", ["b"], ["y"], to=FLOAT),
        ],
        (2, 3),
        covers=["Cast", "Mul"],
        weights={"w": W23},
    ),
    chain(
        "CastLike",
        lambda: [helper.make_node("CastLike", ["x", "w"], ["y"])],
        (2, 3),
        covers=["CastLike"],
        weights={"w": W23},
        opset=15,
    ),
    chain(
        "Cast/to-int-is-off-path",
        lambda: [
            helper.make_node("Cast", ["x"], ["i"], to=7),
            helper.make_node("Cast", ["i"], ["f"], to=FLOAT),
            helper.make_node("Mul", ["x", "f"], ["y"]),
        ],
        (2, 3),
        covers=["Cast"],
        sample=lambda rng, s: rng.integers(1, 4, s) + rng.uniform(0.2, 0.8, s),
    ),
]
