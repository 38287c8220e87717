"""Op cases for fimaudit/autodiff/rules/shape.py (data movement: reshapes, Concat, Split, Slice, Pad, ...)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.autodiff.opcases import OpCase, chain, single, weights_rng

_rng = weights_rng(11)
X4 = (2, 3, 4, 5)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _runtime_slice_parameters() -> list[helper.NodeProto]:
    """Slice whose starts/ends come from Shape(x) arithmetic (not constants): the run-time VJP path."""
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "one", "two"], ["dim1"]),  # [3]
        helper.make_node("Sub", ["dim1", "two"], ["start"]),  # [1]
        helper.make_node("Slice", ["x", "start", "big", "axes"], ["y"]),
    ]


def _runtime_pads() -> list[helper.NodeProto]:
    """Pad whose pads come from Shape(x) arithmetic: the run-time crop path."""
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["dim0"]),  # [2]
        helper.make_node("Mul", ["dim0", "pattern"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["y"]),
    ]


def _runtime_pads_axes() -> list[helper.NodeProto]:
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["dim0"]),
        helper.make_node("Mul", ["dim0", "pattern"], ["pads"]),
        helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"]),
    ]


def _runtime_tile() -> list[helper.NodeProto]:
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Div", ["shape", "shape"], ["ones"]),
        helper.make_node("Add", ["ones", "extra"], ["repeats"]),
        helper.make_node("Tile", ["x", "repeats"], ["y"]),
    ]


CASES: list[OpCase] = [
    # Reshape: explicit, 0 (copy) and -1 (infer) entries, allowzero (opset 14).
    single("Reshape/explicit", "Reshape", X4, ["x", "s"], {"s": i64(6, 20)}),
    single("Reshape/zero-and-minus-one", "Reshape", X4, ["x", "s"], {"s": i64(0, -1, 5)}),
    single("Reshape/allowzero", "Reshape", X4, ["x", "s"], {"s": i64(2, 3, 20)}, opset=14, allowzero=1),
    single("Reshape/opset11", "Reshape", X4, ["x", "s"], {"s": i64(0, 0, -1)}, opset=11),
    single("Flatten/default", "Flatten", X4),
    single("Flatten/axis0", "Flatten", X4, axis=0),
    single("Flatten/negative-axis", "Flatten", X4, axis=-2, opset=13),
    single("Transpose/default-reverse", "Transpose", X4),
    single("Transpose/perm", "Transpose", X4, perm=[0, 2, 3, 1]),
    single("Transpose/perm-3d", "Transpose", (2, 3, 4), perm=[1, 2, 0], opset=11),
    # Squeeze / Unsqueeze: attribute (< 13) and input (>= 13) forms, negative axes.
    single("Squeeze/opset11-attribute", "Squeeze", (2, 1, 3, 1), axes=[1, -1], opset=11),
    single("Squeeze/opset13-input", "Squeeze", (2, 1, 3, 1), ["x", "a"], {"a": i64(1)}, opset=13),
    single("Squeeze/opset13-all", "Squeeze", (2, 1, 3, 1), opset=13),
    single("Unsqueeze/opset11-attribute", "Unsqueeze", (2, 3), axes=[0, -1], opset=11),
    single("Unsqueeze/opset13-input", "Unsqueeze", (2, 3), ["x", "a"], {"a": i64(1, -1)}, opset=13),
    single("Unsqueeze/opset21", "Unsqueeze", (2, 3), ["x", "a"], {"a": i64(2)}, opset=21),
    # Concat: x with weights, x twice, negative axis.
    single("Concat/with-weight", "Concat", (2, 3, 4), ["w", "x"], {"w": _rng.normal(size=(2, 2, 4))}, axis=1),
    single("Concat/x-twice-negative-axis", "Concat", (2, 3, 4), ["x", "w", "x"], {"w": _rng.normal(size=(2, 3, 1))}, axis=-1),
    single("Concat/axis0-opset11", "Concat", (2, 3), ["x", "x"], axis=0, opset=11),
    # Split: attribute (< 13), input (>= 13), num_outputs (>= 18); y is one of the outputs.
    single("Split/opset11-attribute", "Split", (2, 6), axis=1, split=[2, 4], num_outputs=2, output=1, opset=11),
    single("Split/opset11-equal", "Split", (6, 2), num_outputs=3, output=0, opset=11),
    single("Split/opset13-input", "Split", (2, 6), ["x", "s"], {"s": i64(1, 2, 3)}, axis=-1, num_outputs=3, output=2, opset=13),
    chain(
        "Split/opset18-num-outputs-uneven",
        lambda: [helper.make_node("Split", ["x"], ["a", "b", "y"], axis=1, num_outputs=3)],
        (2, 7),
        covers=["Split"],
        opset=18,
    ),
    chain(
        "Split/two-outputs-used",
        lambda: [
            helper.make_node("Split", ["x"], ["a", "b"], axis=0, num_outputs=2),
            helper.make_node("Mul", ["a", "b"], ["y"]),
        ],
        (4, 3),
        covers=["Split", "Mul"],
        opset=18,
    ),
    # Slice: unit steps (static Pad path), negative/large steps, clamping, negative axes, int32
    # parameters, and parameters computed at run time.
    single("Slice/unit-steps", "Slice", X4, ["x", "b", "e", "a"], {"b": i64(1, 1), "e": i64(3, 4), "a": i64(1, 3)}),
    single("Slice/default-axes-clamped", "Slice", (4, 5), ["x", "b", "e"], {"b": i64(-3, 0), "e": i64(100, -1)}),
    single("Slice/negative-step", "Slice", X4, ["x", "b", "e", "a", "s"], {"b": i64(-1), "e": i64(-100), "a": i64(-1), "s": i64(-2)}),
    single("Slice/step-3-clamped", "Slice", X4, ["x", "b", "e", "a", "s"], {"b": i64(-10, 1), "e": i64(100, 5), "a": i64(2, 3), "s": i64(3, 2)}),
    single(
        "Slice/int32-reverse",
        "Slice",
        (3, 4),
        ["x", "b", "e", "a", "s"],
        {"b": np.array([10], np.int32), "e": np.array([-10], np.int32), "a": np.array([0], np.int32), "s": np.array([-1], np.int32)},
        opset=11,
    ),
    single("Slice/opset21", "Slice", X4, ["x", "b", "e", "a"], {"b": i64(0), "e": i64(1), "a": i64(-3)}, opset=21),
    chain(  # three slices tiling axis 1 (context._tiled joins their cotangents with one Concat)
        "Slice/tiles",
        lambda: [helper.make_node("Slice", ["x", "b0", "e0", "a"], ["p"]), helper.make_node("Slice", ["x", "b1", "e1", "a"], ["q"]),
                 helper.make_node("Slice", ["x", "b2", "e2", "a"], ["r"]), helper.make_node("Mul", ["p", "q"], ["pq"]),
                 helper.make_node("Mul", ["pq", "r"], ["y"])],
        (2, 6, 3),
        covers=["Slice", "Mul"],
        weights={"b0": i64(0), "e0": i64(2), "b1": i64(2), "e1": i64(4), "b2": i64(4), "e2": i64(100), "a": i64(1)},
    ),
    chain(
        "Slice/runtime-parameters",
        _runtime_slice_parameters,
        X4,
        covers=["Slice"],
        weights={"one": i64(1), "two": i64(2), "big": i64(1000), "axes": i64(1)},
    ),
    # Expand: broadcast a low-rank x, a size-1 axis, and a shape of lower rank than x.
    single("Expand/rank-up", "Expand", (3, 1), ["x", "s"], {"s": i64(2, 3, 4)}),
    single("Expand/same-rank", "Expand", (1, 3, 1), ["x", "s"], {"s": i64(2, 1, 4)}),
    single("Expand/shape-lower-rank", "Expand", (2, 1, 3), ["x", "s"], {"s": i64(5, 1)}, opset=11),
    # Tile: constant repeats and repeats computed at run time.
    single("Tile/constant", "Tile", (2, 3), ["x", "r"], {"r": i64(2, 3)}),
    chain("Tile/runtime-repeats", _runtime_tile, (2, 3), covers=["Tile"], weights={"extra": i64(1, 0)}),
    # Pad: attribute form (< 11), constant input form, constant value, opset-18 axes, modes.
    single("Pad/opset10-attribute", "Pad", (2, 3, 4), pads=[0, 1, 2, 0, 2, 1], opset=10),
    single("Pad/opset11-constant", "Pad", (2, 3, 4), ["x", "p", "c"], {"p": i64(1, 0, 2, 0, 3, 1), "c": np.array(0.5)}, opset=11),
    single("Pad/opset18-axes", "Pad", (2, 3, 4), ["x", "p", "", "a"], {"p": i64(1, 2, 3, 0), "a": i64(-1, 1)}, opset=18),
    single("Pad/reflect", "Pad", (2, 3, 5), ["x", "p"], {"p": i64(0, 2, 3, 0, 1, 4)}, mode="reflect", opset=13),
    single("Pad/edge", "Pad", (2, 3, 5), ["x", "p"], {"p": i64(0, 2, 3, 0, 1, 6)}, mode="edge", opset=13),
    single("Pad/wrap", "Pad", (2, 3, 5), ["x", "p"], {"p": i64(0, 2, 3, 0, 1, 4)}, mode="wrap", opset=19),
    chain("Pad/runtime-pads", _runtime_pads, (2, 3), covers=["Pad"], weights={"zero": i64(0), "one": i64(1), "pattern": i64(1, 0, 0, 2)}, opset=13),
    chain(
        "Pad/runtime-pads-axes",
        _runtime_pads_axes,
        (2, 3, 4),
        covers=["Pad"],
        weights={"zero": i64(0), "one": i64(1), "pattern": i64(1, 0, 0, 2), "axes": i64(2, 0)},
        opset=18,
    ),
    # Symbolic batch dim N: shapes read at run time (Concat/Slice along N take the run-time paths).
    single("Reshape/symbolic-batch", "Reshape", X4, ["x", "s"], {"s": i64(0, -1)}, symbolic_batch=True),
    single("Flatten/symbolic-batch", "Flatten", X4, symbolic_batch=True),
    single("Transpose/symbolic-batch", "Transpose", X4, perm=[3, 0, 2, 1], symbolic_batch=True),
    single("Squeeze/symbolic-batch", "Squeeze", (2, 1, 3), ["x", "a"], {"a": i64(1)}, opset=13, symbolic_batch=True),
    single("Unsqueeze/symbolic-batch", "Unsqueeze", (2, 3), axes=[1], opset=11, symbolic_batch=True),
    single("Concat/symbolic-batch-axis0", "Concat", (2, 3), ["x", "w", "x"], {"w": _rng.normal(size=(1, 3))}, axis=0, symbolic_batch=True),
    single("Split/symbolic-batch", "Split", (2, 6), ["x", "s"], {"s": i64(4, 2)}, axis=1, num_outputs=2, output=0, opset=13, symbolic_batch=True),
    single("Slice/symbolic-batch-axis0", "Slice", X4, ["x", "b", "e", "a"], {"b": i64(1), "e": i64(100), "a": i64(0)}, symbolic_batch=True),
    single("Slice/symbolic-batch-axis2", "Slice", X4, ["x", "b", "e", "a"], {"b": i64(1), "e": i64(-1), "a": i64(2)}, symbolic_batch=True),
    single("Expand/symbolic-batch", "Expand", (2, 1, 3), ["x", "s"], {"s": i64(4, 1)}, symbolic_batch=True),
    single("Tile/symbolic-batch", "Tile", (2, 3), ["x", "r"], {"r": i64(2, 2)}, symbolic_batch=True),
    single("Pad/symbolic-batch-reflect", "Pad", (2, 3, 5), ["x", "p"], {"p": i64(0, 0, 2, 0, 0, 1)}, mode="reflect", opset=13, symbolic_batch=True),
    single("Pad/symbolic-batch-constant", "Pad", (2, 3, 5), ["x", "p"], {"p": i64(1, 0, 2, 0, 0, 1)}, opset=13, symbolic_batch=True),
]
