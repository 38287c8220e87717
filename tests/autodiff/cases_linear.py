"""Op cases for fimaudit/autodiff/rules/linear.py: Conv, ConvTranspose, Gemm, MatMul, BatchNormalization."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.autodiff.opcases import OpCase, chain, single, weights_rng

_rng = weights_rng(3)


def _w(*shape: int) -> np.ndarray:
    return _rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))


def _conv(id: str, x_shape, w_shape, opset: int = 17, bias: bool = False, **attrs) -> OpCase:
    weights = {"w": _w(*w_shape)}
    inputs = ["x", "w"]
    if bias:
        weights["b"] = _rng.normal(size=(w_shape[0],))
        inputs.append("b")
    return single(f"Conv/{id}", "Conv", x_shape, inputs, weights, opset=opset, **attrs)


def _conv_t(id: str, x_shape, w_shape, opset: int = 17, **attrs) -> OpCase:
    return single(f"ConvTranspose/{id}", "ConvTranspose", x_shape, ["x", "w"], {"w": _w(*w_shape)}, opset=opset, **attrs)


_bn = {
    "scale": _rng.uniform(0.5, 2.0, 3),
    "bias": _rng.normal(size=3),
    "mean": _rng.normal(size=3),
    "var": _rng.uniform(0.5, 2.0, 3),
}

CASES: list[OpCase] = [
    _conv("plain-bias", (2, 3, 5, 5), (4, 3, 3, 3), bias=True),
    _conv("stride2-odd", (1, 2, 7, 6), (3, 2, 3, 3), strides=[2, 2]),
    _conv("stride3-pads-asym", (2, 2, 8, 7), (2, 2, 3, 2), strides=[3, 2], pads=[1, 0, 2, 1]),
    _conv("dilation", (1, 2, 9, 9), (3, 2, 3, 3), dilations=[2, 3], pads=[1, 1, 1, 1]),
    _conv("dilation-stride", (1, 2, 10, 9), (2, 2, 2, 3), dilations=[2, 2], strides=[2, 3]),
    _conv("group2", (2, 4, 5, 5), (6, 2, 3, 3), group=2, pads=[1, 1, 1, 1]),
    _conv("depthwise-stride2", (1, 3, 6, 6), (3, 1, 3, 3), group=3, strides=[2, 2], pads=[1, 1, 1, 1]),
    _conv("same-upper-stride2", (1, 2, 7, 8), (3, 2, 3, 3), auto_pad="SAME_UPPER", strides=[2, 2]),
    _conv("same-lower", (1, 2, 6, 5), (2, 2, 2, 2), auto_pad="SAME_LOWER"),
    _conv("valid-stride2", (1, 2, 7, 7), (2, 2, 3, 3), auto_pad="VALID", strides=[2, 2]),
    _conv("1d", (2, 3, 9), (2, 3, 3), strides=[2], pads=[1, 0]),
    _conv("3d", (1, 2, 4, 5, 4), (2, 2, 2, 3, 2), strides=[1, 2, 1], pads=[0, 1, 0, 1, 0, 1]),
    _conv("opset11-kernel-shape", (1, 2, 5, 5), (2, 2, 3, 3), opset=11, kernel_shape=[3, 3]),
    _conv("opset21", (1, 2, 5, 5), (2, 2, 3, 3), opset=21, strides=[2, 2]),
    _conv("symbolic-batch-stride2", (2, 2, 6, 5), (2, 2, 3, 3), strides=[2, 2], symbolic_batch=True),
    _conv("symbolic-batch-same-upper", (2, 2, 5, 5), (2, 2, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER", symbolic_batch=True),
    # stride 1 with a constant weight: the adjoint is a Conv with flipped, transposed weights
    _conv("stride1-group3-dilation-asym-pads", (2, 6, 7, 6), (9, 2, 3, 2), group=3, dilations=[2, 1],
          pads=[0, 1, 3, 0]),
    _conv("stride1-1d-same-upper", (2, 3, 8), (4, 3, 4), auto_pad="SAME_UPPER"),
    _conv("stride1-3d", (1, 2, 4, 4, 3), (3, 2, 3, 2, 2), pads=[1, 0, 1, 1, 1, 0]),
    _conv("stride1-pad-beyond-extent", (1, 2, 4, 4), (3, 2, 1, 1), pads=[1, 2, 0, 1]),  # stays ConvTranspose
    # ... when the Conv reads more than linear.FEW_INPUT_CHANNELS channels or is grouped (the
    # ungrouped ones above read fewer: their adjoint stays ConvTranspose, test_graph_economy)
    _conv("stride1-six-channels-dilation-asym-pads", (2, 6, 7, 6), (3, 6, 3, 2), dilations=[2, 1],
          pads=[0, 1, 3, 0]),
    _conv("stride1-five-channels-1d-same-upper", (2, 5, 8), (4, 5, 4), auto_pad="SAME_UPPER"),
    _conv("stride1-five-channels-3d", (1, 5, 4, 4, 3), (3, 5, 3, 2, 2), pads=[1, 0, 1, 1, 1, 0]),
    _conv("stride1-five-channels-bias", (2, 5, 5, 5), (4, 5, 3, 3), bias=True, pads=[1, 1, 1, 1]),
    _conv("stride1-four-channels", (2, 4, 6, 6), (5, 4, 3, 3), pads=[1, 1, 1, 1]),
    # strided 2-D convs of the shapes classifiers use (ConvTranspose adjoints)
    _conv("strided-1x1-stride2", (2, 3, 7, 6), (4, 3, 1, 1), strides=[2, 2]),
    _conv("strided-7x7-stride2-pad3", (1, 3, 11, 12), (4, 3, 7, 7), strides=[2, 2], pads=[3, 3, 3, 3]),
    _conv("strided-stride3-asym-pads", (1, 2, 10, 11), (3, 2, 4, 2), strides=[3, 3], pads=[2, 0, 1, 1]),
    _conv("strided-group2-stride2", (2, 4, 9, 8), (6, 2, 3, 3), group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
    _conv("strided-kernel-below-stride", (1, 2, 9, 9), (2, 2, 2, 1), strides=[3, 3], pads=[0, 1, 1, 0]),
    _conv_t("plain", (2, 3, 4, 4), (3, 2, 3, 3)),
    _conv_t("stride2-pads-outpad", (1, 2, 4, 3), (2, 3, 3, 3), strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 1]),
    _conv_t("group-dilation", (1, 4, 4, 4), (4, 1, 2, 2), group=2, dilations=[2, 1]),
    _conv_t("same-upper", (1, 2, 3, 4), (2, 2, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER"),
    _conv_t("output-shape", (1, 2, 3, 3), (2, 2, 3, 3), strides=[2, 2], output_shape=[6, 7]),
    _conv_t("1d", (2, 2, 5), (2, 3, 3), strides=[3]),
    _conv_t("symbolic-batch-same-lower", (2, 2, 3, 3), (2, 2, 3, 3), strides=[2, 2], auto_pad="SAME_LOWER", symbolic_batch=True),
    single("Gemm/symbolic-batch", "Gemm", (4, 3), ["x", "w", "c"], {"w": _w(5, 3), "c": _rng.normal(size=(1, 5))}, transB=1, symbolic_batch=True),
    single("MatMul/symbolic-batch", "MatMul", (2, 4, 3), ["x", "w"], {"w": _w(3, 5)}, symbolic_batch=True),
    single("BatchNormalization/symbolic-batch", "BatchNormalization", (2, 3, 2, 2), ["x", "scale", "bias", "mean", "var"], _bn, symbolic_batch=True),
    single("Gemm/plain", "Gemm", (4, 3), ["x", "w"], {"w": _w(3, 5)}),
    single("Gemm/transB-bias", "Gemm", (4, 3), ["x", "w", "c"], {"w": _w(5, 3), "c": _rng.normal(size=5)}, transB=1),
    single("Gemm/transA-alpha-beta", "Gemm", (3, 4), ["x", "w", "c"], {"w": _w(3, 5), "c": _rng.normal(size=(4, 5))}, transA=1, alpha=0.7, beta=1.3),
    single("Gemm/x-as-B-transB", "Gemm", (5, 3), ["w", "x", "c"], {"w": _w(4, 3), "c": _rng.normal(size=(1, 5))}, transB=1, alpha=2.0),
    single("Gemm/x-as-B", "Gemm", (3, 5), ["w", "x"], {"w": _w(4, 3)}, transA=0),
    single("Gemm/x-as-C", "Gemm", (5,), ["w", "v", "x"], {"w": _w(4, 3), "v": _w(3, 5)}, beta=0.5),
    single("Gemm/x-twice", "Gemm", (3, 3), ["x", "x"], transA=1),
    single("Gemm/opset11", "Gemm", (4, 3), ["x", "w", "c"], {"w": _w(5, 3), "c": _rng.normal(size=5)}, transB=1, opset=11),
    single("MatMul/2d", "MatMul", (4, 3), ["x", "w"], {"w": _w(3, 5)}),
    single("MatMul/batched-x-2d-w", "MatMul", (2, 4, 3), ["x", "w"], {"w": _w(3, 5)}),
    single("MatMul/2d-x-batched-w", "MatMul", (4, 3), ["x", "w"], {"w": _w(2, 3, 5)}),
    single("MatMul/broadcast-batch", "MatMul", (2, 1, 4, 3), ["x", "w"], {"w": _w(3, 3, 5)}),
    single("MatMul/w-first", "MatMul", (2, 3, 5), ["w", "x"], {"w": _w(4, 3)}),
    single("MatMul/x-vector-left", "MatMul", (3,), ["x", "w"], {"w": _w(2, 3, 5)}),
    single("MatMul/x-vector-right", "MatMul", (3,), ["w", "x"], {"w": _w(2, 4, 3)}),
    single("MatMul/vector-vector", "MatMul", (3,), ["x", "w"], {"w": _w(3)}),
    single("MatMul/vector-w-right", "MatMul", (2, 4, 3), ["x", "w"], {"w": _w(3)}),
    single("MatMul/x-times-x", "MatMul", (2, 3, 3), ["x", "x"]),
    single("MatMul/opset11", "MatMul", (2, 4, 3), ["x", "w"], {"w": _w(3, 5)}, opset=11),
    single("BatchNormalization/4d", "BatchNormalization", (2, 3, 2, 2), ["x", "scale", "bias", "mean", "var"], _bn),
    single("BatchNormalization/2d-eps", "BatchNormalization", (4, 3), ["x", "scale", "bias", "mean", "var"], _bn, epsilon=0.1),
    single("BatchNormalization/3d-opset11", "BatchNormalization", (2, 3, 5), ["x", "scale", "bias", "mean", "var"], _bn, opset=11),
    single("BatchNormalization/opset15-inference", "BatchNormalization", (2, 3, 2, 2), ["x", "scale", "bias", "mean", "var"], _bn, opset=15, training_mode=0),
    chain(
        "Conv-BatchNormalization-Tanh-Conv",
        lambda: [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"]),
            helper.make_node("Tanh", ["n"], ["t"]),
            helper.make_node("Conv", ["t", "g"], ["y"]),
        ],
        (2, 2, 5, 5),
        covers=["Conv", "BatchNormalization", "Tanh"],
        weights={"w": _w(3, 2, 3, 3), "g": _w(4, 3, 3, 3), **_bn},
    ),
]
