"""Op cases for fimaudit/autodiff/rules/pooling.py.

MaxPool inputs are distinct values (no ties within a window). Geometries avoid onnx.reference's
pooling bugs (onnx 1.23): asymmetric 2-D pads are read in the wrong order by its unit-stride
path, auto_pad is ignored by its strided MaxPool path, and GlobalMaxPool is right only in 2-D.
Not here: ceil_mode with a last window starting in the padding (ONNX Runtime and onnx.reference
drop that window, onnx shape inference counts it): the rules refuse it (test_pooling_refusals.py).
"""

from __future__ import annotations

from tests.autodiff.opcases import OpCase, distinct, normal, single

X = (2, 3, 7, 6)

# (name, input shape, attributes, opset): window geometries shared by AveragePool and MaxPool.
GEOMETRIES: list[tuple[str, tuple[int, ...], dict[str, object], int]] = [
    ("2x2-stride2", X, {"kernel_shape": [2, 2], "strides": [2, 2]}, 17),
    ("3x3-stride2-pads-overlap", X, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 17),
    ("asymmetric-pads", X, {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [0, 1, 2, 0]}, 13),
    ("ceil-mode", X, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 17),
    ("same-upper", X, {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17),
    ("same-lower-opset11", X, {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}, 11),
    ("1d", (2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 0]}, 17),
    ("3d", (1, 2, 4, 5, 3), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 1]}, 21),
]


def _pool_cases(op: str, sample=normal, **extra: object) -> list[OpCase]:
    suffix = "-".join(f"{key}{value}" for key, value in extra.items())
    return [
        single(f"{op}/{name}{'-' + suffix if suffix else ''}", op, shape, opset=opset, sample=sample, **attributes, **extra)
        for name, shape, attributes, opset in GEOMETRIES
    ]


CASES: list[OpCase] = [
    single("GlobalAveragePool", "GlobalAveragePool", X),
    single("GlobalAveragePool/1d-opset11", "GlobalAveragePool", (2, 3, 5), opset=11),
    single("GlobalMaxPool", "GlobalMaxPool", X, sample=distinct),
    single("GlobalMaxPool/opset11", "GlobalMaxPool", (1, 2, 3, 4), sample=distinct, opset=11),
    *_pool_cases("AveragePool"),
    *_pool_cases("AveragePool", count_include_pad=1),
    single("AveragePool/dilations-opset19", "AveragePool", X, kernel_shape=[2, 2], dilations=[2, 1], pads=[1, 0, 1, 1], count_include_pad=1, opset=19),
    single("AveragePool/dilations-ceil-opset19", "AveragePool", X, kernel_shape=[2, 2], dilations=[2, 2], strides=[2, 1], ceil_mode=1, opset=19),
    *_pool_cases("MaxPool", sample=distinct),
    single("MaxPool/dilations", "MaxPool", X, kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 0, 1], sample=distinct, opset=12),
    single("MaxPool/indices-output", "MaxPool", X, kernel_shape=[3, 3], strides=[1, 1], num_outputs=2, sample=distinct),
    # Windows that tile the input (stride = kernel, no padding, no remainder): the winner-mask path.
    single("MaxPool/tiling-2x2", "MaxPool", (2, 3, 8, 6), kernel_shape=[2, 2], strides=[2, 2], sample=distinct),
    single("MaxPool/tiling-3x2-opset12", "MaxPool", (2, 3, 9, 6), kernel_shape=[3, 2], strides=[3, 2], sample=distinct, opset=12),
    single("MaxPool/tiling-1d", "MaxPool", (2, 3, 8), kernel_shape=[4], strides=[4], sample=distinct),
    single("MaxPool/tiling-symbolic-batch", "MaxPool", (2, 3, 8, 6), kernel_shape=[2, 2], strides=[2, 2], sample=distinct, symbolic_batch=True),
    # Symbolic batch dim N (spatial dims static).
    single("GlobalAveragePool/symbolic-batch", "GlobalAveragePool", X, symbolic_batch=True),
    single("GlobalMaxPool/symbolic-batch", "GlobalMaxPool", X, sample=distinct, symbolic_batch=True),
    single("AveragePool/symbolic-batch", "AveragePool", X, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], symbolic_batch=True),
    single("MaxPool/symbolic-batch", "MaxPool", X, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], sample=distinct, symbolic_batch=True),
]
