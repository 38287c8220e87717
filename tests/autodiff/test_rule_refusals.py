"""Gradient rules refuse what they cannot do correctly, loudly (UnsupportedOpError or a run error).

The op-case table (test_rules.py) checks what the rules support; these check the stated limits
of shape.py, gather.py, pooling.py and resize.py.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from fimaudit.autodiff.build import COTANGENT, build_jvp_model, build_vjp_model
from fimaudit.errors import UnsupportedOpError
from tests.autodiff.opcases import OpCase, chain, single


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _runtime_scales() -> list[helper.NodeProto]:
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["floats"], to=1),
        helper.make_node("Div", ["floats", "floats"], ["ones"]),
        helper.make_node("Add", ["ones", "extra"], ["scales"]),
        helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear"),
    ]


def _runtime_reflect_pads() -> list[helper.NodeProto]:
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["dim0"]),
        helper.make_node("Mul", ["dim0", "pattern"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect"),
    ]


REFUSED: list[OpCase] = [
    # ONNX Runtime drops this last window (it starts in the padding); shape inference counts it.
    single("MaxPool/ceil-mode-window-in-padding", "MaxPool", (1, 2, 5, 5), kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    single("AveragePool/ceil-mode-window-in-padding", "AveragePool", (1, 2, 5, 5), kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    single("Resize/antialias", "Resize", (1, 1, 8, 8), ["x", "", "s"], {"s": np.array([1, 1, 0.5, 0.5], np.float32)}, mode="linear", antialias=1, opset=18),
    single("Resize/tf-crop-and-resize", "Resize", (1, 1, 4, 4), ["x", "r", "s"], {"r": np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], np.float32), "s": np.array([1, 1, 2, 2], np.float32)}, mode="linear", coordinate_transformation_mode="tf_crop_and_resize", opset=13),
    chain("Resize/runtime-scales", _runtime_scales, (1, 1, 4, 4), covers=["Resize"], weights={"extra": np.array([0, 0, 1, 1], np.float32)}, opset=13),
    chain("Pad/reflect-runtime-pads", _runtime_reflect_pads, (2, 3), covers=["Pad"], weights={"zero": i64(0), "one": i64(1), "pattern": i64(0, 1, 0, 1)}, opset=13),
    single("ScatterND/reduction-mul", "ScatterND", (2, 3), ["x", "i", "u"], {"i": i64(1).reshape(1, 1), "u": np.ones((1, 3))}, reduction="mul", opset=16),
    single("GatherElements/opset13-index-dims-differ", "GatherElements", (2, 3), ["x", "i"], {"i": i64(0, 1).reshape(1, 2)}, axis=1, opset=13),
]


# Limits of the reverse-mode rule only (the forward-mode twin is a plain Pad / GatherElements).
FORWARD_MODE_FINE = {"Pad/reflect-runtime-pads", "GatherElements/opset13-index-dims-differ"}


@pytest.mark.parametrize("case", REFUSED, ids=[case.id for case in REFUSED])
@pytest.mark.parametrize("build", [build_vjp_model, build_jvp_model], ids=["vjp", "jvp"])
def test_refused(case: OpCase, build) -> None:
    model = case.build(np.float32)
    if case.id in FORWARD_MODE_FINE and build is build_jvp_model:
        build(model, "x", "y")  # the forward-mode rule has no such limit
        return
    with pytest.raises(UnsupportedOpError, match=case.ops[0]):
        build(model, "x", "y")


def test_resize_size_taken_as_unchanged_fails_loudly_when_it_changes() -> None:
    """Runtime sizes that double the batch: the VJP treats the batch axis as unchanged and its
    final Reshape to the input's shape must fail at run time rather than return a wrong gradient."""
    case = chain(
        "Resize/runtime-sizes-doubling-batch",
        lambda: [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
            helper.make_node("Mul", ["batch", "two"], ["doubled"]),
            helper.make_node("Concat", ["doubled", "rest"], ["sizes"], axis=0),
            helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
        ],
        (2, 1, 3, 3),
        covers=["Resize"],
        weights={"zero": i64(0), "one": i64(1), "two": i64(2), "rest": i64(1, 6, 6)},
        symbolic_batch=True,
    )
    model = build_vjp_model(case.build(np.float32), "x", "y")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 1, 3, 3), np.float32)
    cotangent = np.ones((1, 4, 1, 6, 6), np.float32)
    with pytest.raises(Exception, match="(?i)reshape"):
        session.run(None, {"x": x, COTANGENT: cotangent})
