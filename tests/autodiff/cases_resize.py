"""Op cases for fimaudit/autodiff/rules/resize.py: modes, coordinate transformations, scales/sizes, opsets.

Scales avoid near-ties of nearest rounding that float32 and float64 could break differently.
onnx.reference (1.23) rejects tf_half_pixel_for_nn and negative ``axes``; ONNX Runtime's linear
mode on 4-D inputs resizes only the two innermost axes.
"""

from __future__ import annotations

import numpy as np

from onnx import helper

from tests.autodiff.opcases import OpCase, chain, single

X = (1, 2, 4, 5)
EMPTY = np.zeros(0, dtype=np.float32)


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _scales(id: str, scales: np.ndarray, opset: int = 13, shape: tuple[int, ...] = X, **attributes: object) -> OpCase:
    """Resize with constant scales (opset 11-12 need the roi input, empty)."""
    if opset < 13:
        return single(id, "Resize", shape, ["x", "roi", "s"], {"roi": EMPTY, "s": scales}, opset=opset, **attributes)
    return single(id, "Resize", shape, ["x", "", "s"], {"s": scales}, opset=opset, **attributes)


def _sizes(id: str, sizes: np.ndarray, opset: int = 13, shape: tuple[int, ...] = X, **attributes: object) -> OpCase:
    if opset < 13:
        return single(id, "Resize", shape, ["x", "roi", "s", "z"], {"roi": EMPTY, "s": EMPTY, "z": sizes}, opset=opset, **attributes)
    return single(id, "Resize", shape, ["x", "", "", "z"], {"z": sizes}, opset=opset, **attributes)


UP2 = f32(1, 1, 2, 2)
CASES: list[OpCase] = [
    # nearest
    _scales("Resize/nearest-asymmetric-floor-opset11", UP2, opset=11, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    _scales("Resize/nearest-half-pixel-default", UP2, mode="nearest"),
    _scales("Resize/nearest-asymmetric-x3", f32(1, 1, 3, 3), mode="nearest", coordinate_transformation_mode="asymmetric"),
    _sizes("Resize/nearest-sizes-down-round-prefer-ceil", i64(1, 2, 3, 2), mode="nearest", nearest_mode="round_prefer_ceil"),
    _sizes("Resize/nearest-align-corners-ceil", i64(1, 2, 7, 9), opset=18, mode="nearest", coordinate_transformation_mode="align_corners", nearest_mode="ceil"),
    # linear
    _scales("Resize/linear-half-pixel-x2", UP2, mode="linear"),
    _scales("Resize/linear-asymmetric-opset11", f32(1, 1, 2, 3), opset=11, mode="linear", coordinate_transformation_mode="asymmetric"),
    _sizes("Resize/linear-align-corners-sizes", i64(1, 2, 7, 3), mode="linear", coordinate_transformation_mode="align_corners"),
    _sizes("Resize/linear-pytorch-half-pixel-down", i64(1, 2, 1, 3), mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    _scales("Resize/linear-2d-input", f32(1.5, 0.75), shape=(4, 5), mode="linear"),
    _scales("Resize/linear-half-pixel-symmetric-opset19", f32(1, 1, 1.7, 0.6), opset=19, mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
    _scales("Resize/linear-3d-input", f32(1, 2, 1.5), shape=(2, 3, 4), mode="linear"),
    # opset 18 axes and aspect-ratio policy
    single("Resize/opset18-axes-scales", "Resize", X, ["x", "", "s"], {"s": f32(3, 2)}, opset=18, mode="linear", axes=[2, 3]),
    single("Resize/opset18-sizes-not-larger", "Resize", X, ["x", "", "", "z"], {"z": i64(6, 6)}, opset=18, mode="linear", axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
    # cubic
    _scales("Resize/cubic-half-pixel", UP2, mode="cubic"),
    _scales("Resize/cubic-exclude-outside-asymmetric", f32(1, 1, 1.5, 2), opset=11, mode="cubic", coordinate_transformation_mode="asymmetric", exclude_outside=1, cubic_coeff_a=-0.5),
    # Symbolic batch dim N.
    _scales("Resize/symbolic-batch-linear", UP2, mode="linear", symbolic_batch=True),
    _sizes("Resize/symbolic-batch-nearest-sizes", i64(1, 2, 8, 10), mode="nearest", symbolic_batch=True),
    chain(
        "Resize/symbolic-batch-runtime-sizes",  # as torch exports F.interpolate(size=...)
        lambda: [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "zero", "two"], ["batch_channels"]),
            helper.make_node("Concat", ["batch_channels", "spatial"], ["sizes"], axis=0),
            helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        ],
        X,
        covers=["Resize"],
        weights={"zero": i64(0), "two": i64(2), "spatial": i64(7, 3)},
        symbolic_batch=True,
    ),
]
