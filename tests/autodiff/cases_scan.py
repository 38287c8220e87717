"""Op cases for fimaudit/autodiff/rules/scan.py (CumSum, Einsum)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.autodiff.opcases import OpCase, chain, single, weights_rng

_rng = weights_rng(16)


def _einsum_self() -> list:
    """Both operands on the path: x @ tanh(x)^T per batch."""
    return [
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("Einsum", ["x", "t"], ["y"], equation="bij,bkj->bik"),
    ]


CASES: list[OpCase] = [
    single("CumSum/axis1", "CumSum", (2, 5, 3), ["x", "a"], {"a": np.array(1, np.int64)}, opset=14),
    single("CumSum/exclusive-reverse-negative-axis", "CumSum", (2, 5, 3), ["x", "a"], {"a": np.array(-1, np.int64)}, exclusive=1, reverse=1, opset=14),
    single("CumSum/exclusive-opset11-symbolic-batch", "CumSum", (3, 4), ["x", "a"], {"a": np.array(0, np.int32)}, exclusive=1, opset=11, symbolic_batch=True),
    single("CumSum/reverse", "CumSum", (4, 3), ["x", "a"], {"a": np.array(0, np.int64)}, reverse=1, opset=14),
    single("Einsum/matmul", "Einsum", (3, 4), ["x", "w"], {"w": _rng.normal(size=(4, 5))}, equation="ij,jk->ik", opset=12),
    single("Einsum/batch-matmul-weight-first", "Einsum", (2, 3, 4), ["w", "x"], {"w": _rng.normal(size=(2, 5, 3))}, equation="bkj,bjl->bkl", opset=12),
    single("Einsum/transpose", "Einsum", (2, 3, 4), equation="abc->cab", opset=12),
    single("Einsum/reduction-implicit-output", "Einsum", (2, 3, 4), ["x", "w"], {"w": _rng.normal(size=(4,))}, equation="abc,c", opset=12),
    single("Einsum/sum-only-in-x", "Einsum", (2, 3, 4), ["x", "w"], {"w": _rng.normal(size=(2, 5))}, equation="abc,ad->ad", opset=12),
    single("Einsum/attention-scores", "Einsum", (2, 3, 4, 5), ["x", "w"], {"w": _rng.normal(size=(2, 3, 6, 5))}, equation="bhqd,bhkd->bhqk", opset=13),
    chain("Einsum/both-operands-on-path", _einsum_self, (2, 3, 4), covers=["Einsum", "Tanh"], opset=12),
]
