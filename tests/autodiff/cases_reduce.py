"""Op cases for fimaudit/autodiff/rules/reduce.py (axes attribute vs input, keepdims, noop, negative axes)."""

from __future__ import annotations

import numpy as np

from tests.autodiff.opcases import OpCase, away_from_zero, distinct, single

X4 = (2, 3, 4, 5)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _variants(op: str, since: int, sample=None) -> list[OpCase]:
    """Attribute form (opset 11), input form (opset ``since`` and 21), keepdims, negative axes, all axes, noop."""
    extra = {} if sample is None else {"sample": sample}
    return [
        single(f"{op}/opset11-attribute", op, X4, axes=[1, 3], opset=11, **extra),
        single(f"{op}/opset11-negative-no-keepdims", op, X4, axes=[-1, 0], keepdims=0, opset=11, **extra),
        single(f"{op}/opset11-all-axes", op, X4, keepdims=0, opset=11, **extra),
        single(f"{op}/opset{since}-input", op, X4, ["x", "a"], {"a": i64(2)}, opset=since, **extra),
        single(f"{op}/opset{since}-input-no-keepdims", op, X4, ["x", "a"], {"a": i64(-3, 3)}, keepdims=0, opset=since, **extra),
        single(f"{op}/opset{since}-no-axes", op, X4, keepdims=1, opset=since, **extra),
        single(f"{op}/opset{since}-noop-empty-axes", op, X4, ["x", "a"], {"a": i64()}, noop_with_empty_axes=1, opset=since, **extra),
        single(f"{op}/opset21-input", op, (3, 4), ["x", "a"], {"a": i64(0)}, keepdims=0, opset=21, **extra),
    ]


CASES: list[OpCase] = [
    *_variants("ReduceSum", 13),
    *_variants("ReduceMean", 18),
    *_variants("ReduceMax", 18, distinct),
    *_variants("ReduceMin", 18, distinct),
    *_variants("ReduceL1", 18, away_from_zero),
    *_variants("ReduceL2", 18, away_from_zero),
    *_variants("ReduceSumSquare", 18),
    *_variants("ReduceLogSumExp", 18),
    # Symbolic batch dim N: ReduceMean over N divides by a count read at run time.
    single("ReduceMean/symbolic-batch-over-batch", "ReduceMean", X4, axes=[0, 2], opset=13, symbolic_batch=True),
    single("ReduceSum/symbolic-batch", "ReduceSum", X4, ["x", "a"], {"a": i64(-1)}, keepdims=0, opset=13, symbolic_batch=True),
    single("ReduceMax/symbolic-batch", "ReduceMax", X4, axes=[1], keepdims=0, opset=13, sample=distinct, symbolic_batch=True),
    single("ReduceL2/symbolic-batch-all", "ReduceL2", X4, opset=13, sample=away_from_zero, symbolic_batch=True),
]
