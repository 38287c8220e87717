"""Op cases for fimaudit/autodiff/rules/gather.py (repeated and negative indices, both scatter paths).

onnx.reference's GatherElements accepts only indices whose other dims equal the data's, and
misreads a negative axis; the cases stay within that.

Opset 13 cases use the one-hot scatter (no ScatterElements reduction before 16), opset 16+
cases ScatterElements(reduction='add'); a single constant Gather index (0-d or [1]) takes the
Pad fast path at every opset.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.autodiff.opcases import OpCase, chain, single, weights_rng

_rng = weights_rng(13)
X3 = (2, 4, 3)


def i64(values: object) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _gather_variants(opset: int) -> list[OpCase]:
    return [
        single(f"Gather/opset{opset}-axis1-repeated-negative", "Gather", X3, ["x", "i"], {"i": i64([[0, -1], [2, 0]])}, axis=1, opset=opset),
        single(f"Gather/opset{opset}-scalar-index", "Gather", X3, ["x", "i"], {"i": i64(-4)}, axis=-2, opset=opset),
        single(f"Gather/opset{opset}-one-element-index", "Gather", X3, ["x", "i"], {"i": i64([-2])}, axis=1, opset=opset),
        single(f"Gather/opset{opset}-axis0", "Gather", X3, ["x", "i"], {"i": i64([1, 1, 0])}, opset=opset),
        single(f"Gather/opset{opset}-last-axis", "Gather", X3, ["x", "i"], {"i": np.array([2, -3], np.int32)}, axis=2, opset=opset),
    ]


def _two_gathers_multiplied(name: str, first: np.ndarray, second: np.ndarray) -> OpCase:
    """y = x[:, first] * x[:, second] on [2, 3, 4]: two placements along one axis, tiling it or not."""
    return chain(
        name,
        lambda: [helper.make_node("Gather", ["x", "i0"], ["q"], axis=1), helper.make_node("Gather", ["x", "i1"], ["k"], axis=1),
                 helper.make_node("Mul", ["q", "k"], ["y"])],
        (2, 3, 4),
        covers=["Gather", "Mul"],
        weights={"i0": first, "i1": second},
    )


def _gather_nd_variants(opset: int) -> list[OpCase]:
    return [
        single(f"GatherND/opset{opset}-tuples", "GatherND", X3, ["x", "i"], {"i": i64([[0, 1], [1, -1], [0, 1]])}, opset=opset),
        single(f"GatherND/opset{opset}-full-index", "GatherND", X3, ["x", "i"], {"i": i64([[[1, 2, 0]], [[0, 0, -1]]])}, opset=opset),
        single(f"GatherND/opset{opset}-batch-dims", "GatherND", X3, ["x", "i"], {"i": i64([[[3], [3]], [[-4], [1]]])}, batch_dims=1, opset=opset),
    ]


CASES: list[OpCase] = [
    *_gather_variants(11),
    *_gather_variants(13),
    *_gather_variants(18),
    chain(
        "Gather/class-token",  # ViT: x[:, 0] on [N, tokens, D] feeding a linear head
        lambda: [helper.make_node("Gather", ["x", "i"], ["c"], axis=1), helper.make_node("MatMul", ["c", "w"], ["y"])],
        (2, 5, 3),
        covers=["Gather", "MatMul"],
        weights={"i": i64(0), "w": _rng.normal(size=(3, 4))},
        opset=17,
    ),
    # Placements that tile an axis: their cotangents are joined by one Concat (context._tiled),
    # all of it (ViT's q, k, v of one qkv tensor), part of it (Concat + Pad), or overlapping (Sum).
    chain(
        "Gather/qkv-tiles",
        lambda: [helper.make_node("Gather", ["x", "i0"], ["q"], axis=0), helper.make_node("Gather", ["x", "i1"], ["k"], axis=0),
                 helper.make_node("Gather", ["x", "i2"], ["v"], axis=0), helper.make_node("Mul", ["q", "k"], ["qk"]),
                 helper.make_node("Add", ["qk", "v"], ["y"])],
        (3, 2, 4),
        covers=["Gather", "Mul", "Add"],
        weights={"i0": i64(0), "i1": i64(1), "i2": i64(-1)},
    ),
    _two_gathers_multiplied("Gather/two-of-three-tiles", i64([2]), i64([1])),
    _two_gathers_multiplied("Gather/same-position-twice", i64(1), i64(1)),
    single("GatherND/opset11-tuples", "GatherND", X3, ["x", "i"], {"i": i64([[0, 1], [1, -1], [0, 1]])}, opset=11),
    *_gather_nd_variants(13),
    *_gather_nd_variants(18),
    single("GatherElements/opset13-axis1", "GatherElements", X3, ["x", "i"], {"i": i64(_rng.integers(-4, 4, size=(2, 6, 3)))}, axis=1, opset=13),
    single("GatherElements/opset11-last-axis", "GatherElements", X3, ["x", "i"], {"i": i64(_rng.integers(0, 3, size=(2, 4, 2)))}, axis=2, opset=11),
    single("GatherElements/opset16-axis1", "GatherElements", X3, ["x", "i"], {"i": i64(_rng.integers(-4, 4, size=(2, 6, 3)))}, axis=1, opset=16),
    single("GatherElements/opset18-axis0-negative", "GatherElements", X3, ["x", "i"], {"i": i64(_rng.integers(-2, 2, size=(3, 4, 3)))}, axis=0, opset=18),
    # ScatterND: x as data, as updates, and both (reduction none and add).
    single("ScatterND/data", "ScatterND", X3, ["x", "i", "u"], {"i": i64([[1, 2], [0, 0]]), "u": _rng.normal(size=(2, 3))}, opset=13),
    single("ScatterND/updates", "ScatterND", (2, 3), ["w", "i", "x"], {"w": _rng.normal(size=X3), "i": i64([[1, 2], [0, -1]])}, opset=13),
    single("ScatterND/both-add-repeated", "ScatterND", X3, ["x", "i", "x"], {"i": i64([[1], [1]])}, reduction="add", opset=16),
    chain(
        "ScatterND/both-none",
        lambda: [
            helper.make_node("Gather", ["x", "zero"], ["u"], axis=1),
            helper.make_node("ScatterND", ["x", "i", "u"], ["y"]),
        ],
        X3,
        covers=["ScatterND", "Gather"],
        weights={"i": i64([[0, 3], [1, 0]]), "zero": i64(0)},
        opset=18,
    ),
    # Symbolic batch dim N.
    single("Gather/symbolic-batch-axis1", "Gather", X3, ["x", "i"], {"i": i64([3, 0, 3])}, axis=1, opset=13, symbolic_batch=True),
    single("Gather/symbolic-batch-scalar-middle", "Gather", X3, ["x", "i"], {"i": i64(-3)}, axis=1, opset=16, symbolic_batch=True),
    single("Gather/symbolic-batch-axis2-opset18", "Gather", X3, ["x", "i"], {"i": i64([[2, -1]])}, axis=2, opset=18, symbolic_batch=True),
    single("GatherND/symbolic-batch-batch-dims", "GatherND", X3, ["x", "i"], {"i": i64([[[3], [0]], [[-4], [1]]])}, batch_dims=1, opset=16, symbolic_batch=True),
    single("GatherElements/symbolic-batch", "GatherElements", X3, ["x", "i"], {"i": i64(_rng.integers(0, 4, size=(2, 3, 3)))}, axis=1, opset=16, symbolic_batch=True),
    single("ScatterND/symbolic-batch", "ScatterND", X3, ["x", "i", "u"], {"i": i64([[1, 2], [0, 0]]), "u": _rng.normal(size=(2, 3))}, opset=16, symbolic_batch=True),
]
