"""Gradient rules of Resize (nearest, linear and cubic modes).

For fixed input and output sizes, Resize is a linear map of X that acts on each resized axis
separately: y = A_1 (A_2 (... x)) with one interpolation matrix A_a [out_a, in_a] per axis
(n-linear and n-cubic interpolation are tensor products of 1-D kernels; nearest picks one input
per output). The matrices are built here in float64 from the ONNX specification (coordinate
transformation, rounding, clamping at the borders) and applied with MatMul: A_a in forward
mode, its transpose in reverse mode, so the twins are adjoint by construction and the finite-
difference check tests that the matrices match the runtime's Resize.

Supported: coordinate_transformation_mode half_pixel, half_pixel_symmetric, pytorch_half_pixel,
align_corners, asymmetric; every nearest_mode; cubic_coeff_a and
exclude_outside; scales or sizes (constants), the opset-18 ``axes`` and
``keep_aspect_ratio_policy``. Not supported (UnsupportedOpError): tf_crop_and_resize (its
extrapolation makes the map affine), tf_half_pixel_for_nn (opset 11-12 only, and onnx.reference
cannot check it), antialias, scales computed at run time, opset 10 Resize.

Cost: |gradient| x in_a multiply-adds per resized axis (dense A_a; fine at classifier sizes).
Exactness: nearest at an exact rounding tie (x_original = k + 0.5) follows ``nearest_mode`` in
float64; a runtime computing x_original in float32 can land on the other side of a near-tie.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from fimaudit.autodiff.context import RuleContext, optional_input
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, float_attribute, int_attribute, ints_attribute

RESIZE_INPUTS = 11  # Resize(X, roi, scales, sizes); opset 10 had Resize(X, scales)


@dataclass(frozen=True)
class AxisResize:
    """One resized axis: forward axis, input and output lengths, and the scale used for coordinates."""

    axis: int
    length_in: int
    length_out: int
    scale: float


def _constant_values(ctx: RuleContext, node: onnx.NodeProto, index: int) -> np.ndarray | None:
    """A non-empty constant input, None when absent or empty; raises for scales computed at run time."""
    name = optional_input(node, index)
    if name is None:
        return None
    value = ctx.constant_value(name)
    if value is None:
        if index == 3 or ctx.static_shape(name) == [0]:
            return None  # sizes computed at run time: the output's inferred shape tells them
        raise UnsupportedOpError(
            f"Resize node {node.name!r}: {('roi', 'scales', 'sizes')[index - 1]} computed at run time "
            "are not supported",
            ["Resize"],
        )
    value = np.asarray(value).reshape(-1)
    return value if value.size else None


def resized_axes(ctx: RuleContext, node: onnx.NodeProto) -> list[AxisResize]:
    """Every axis the node changes, with the scale ONNX uses in its coordinate transformation.

    Axes with scale 1 or equal sizes are the identity and left out; so are axes whose sizes are
    not static when sizes (not scales) are given (see below); the others need static sizes. Output sizes come
    from constant scales (floor(n * scale); shape inference's value when it has one), constant
    sizes, or else shape inference (sizes computed at run time, as torch exports ``size=``).
    """
    if ctx.opset < RESIZE_INPUTS:
        raise UnsupportedOpError(f"Resize node {node.name!r}: opset {ctx.opset} Resize is not supported", ["Resize"])
    if int_attribute(node, "antialias", 0):
        raise UnsupportedOpError(f"Resize node {node.name!r}: antialias is not supported", ["Resize"])
    x, y = node.input[0], node.output[0]
    rank = ctx.require_rank(x, node)
    axes = [ctx.normalize_axis(a, rank) for a in ints_attribute(node, "axes", range(rank))]
    in_shape = ctx.static_shape(x) or [None] * rank
    out_shape = ctx.static_shape(y) or [None] * rank
    scales, sizes = _constant_values(ctx, node, 2), _constant_values(ctx, node, 3)
    policy = str(attribute(node, "keep_aspect_ratio_policy", "stretch"))
    if scales is None and policy != "stretch":
        if sizes is None or not all(isinstance(in_shape[a], int) for a in axes):
            raise UnsupportedOpError(
                f"Resize node {node.name!r}: keep_aspect_ratio_policy needs constant sizes and static input dims",
                ["Resize"],
            )
        ratios = [int(size) / int(in_shape[a]) for size, a in zip(sizes, axes, strict=True)]  # type: ignore[arg-type]
        common = min(ratios) if policy == "not_larger" else max(ratios)
        return [
            AxisResize(a, int(in_shape[a]), math.floor(int(in_shape[a]) * common + 0.5), common)  # type: ignore[arg-type]
            for a in axes
        ]
    changed = []
    for i, axis in enumerate(axes):
        length_in, inferred_out = in_shape[axis], out_shape[axis]
        if scales is not None:
            if float(scales[i]) == 1.0:
                continue
            if not isinstance(length_in, int):
                raise UnsupportedOpError(f"Resize node {node.name!r}: resized axis {axis} must be static", ["Resize"])
            out = inferred_out if isinstance(inferred_out, int) else math.floor(length_in * float(scales[i]))
            changed.append(AxisResize(axis, length_in, out, float(scales[i])))
            continue
        size_out = int(sizes[i]) if sizes is not None else inferred_out
        if not isinstance(length_in, int) or not isinstance(size_out, int) or size_out == length_in:
            # Equal sizes: the identity. A size not known statically (the batch dim N against
            # Shape(x)[0] in runtime sizes) is taken as unchanged too; were it changed, the final
            # Reshape to the other side's runtime shape fails loudly (element counts differ).
            continue
        changed.append(AxisResize(axis, length_in, size_out, size_out / length_in))
    return changed


# ---- the 1-D interpolation matrix (ONNX Resize semantics) ------------------------------------
def _original_coordinates(node: onnx.NodeProto, resize: AxisResize) -> np.ndarray:
    """x_original for every output index, by coordinate_transformation_mode."""
    mode = str(attribute(node, "coordinate_transformation_mode", "half_pixel"))
    n, out, scale = resize.length_in, resize.length_out, resize.scale
    j = np.arange(out, dtype=np.float64)
    if mode == "half_pixel":
        return (j + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * n)
        offset = n / 2 * (1 - adjustment)
        return offset + (j + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (j + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if mode == "align_corners":
        return j * (n - 1) / (out - 1) if out > 1 else np.zeros(out)
    if mode == "asymmetric":
        return j / scale
    raise UnsupportedOpError(
        f"Resize node {node.name!r}: coordinate_transformation_mode {mode!r} is not supported", ["Resize"]
    )


def _round_prefer_floor(x: np.ndarray) -> np.ndarray:
    return np.ceil(x - 0.5)


def _round_prefer_ceil(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)


NEAREST_MODES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": _round_prefer_floor,
    "round_prefer_ceil": _round_prefer_ceil,
    "floor": np.floor,
    "ceil": np.ceil,
}


def _nearest(node: onnx.NodeProto, x: np.ndarray, n: int) -> np.ndarray:
    mode = str(attribute(node, "nearest_mode", "round_prefer_floor"))
    if mode not in NEAREST_MODES:
        raise UnsupportedOpError(f"Resize node {node.name!r}: nearest_mode {mode!r} is not supported", ["Resize"])
    index = np.clip(NEAREST_MODES[mode](x), 0, n - 1).astype(np.int64)
    matrix = np.zeros((x.size, n))
    matrix[np.arange(x.size), index] = 1.0
    return matrix


def _linear(x: np.ndarray, n: int) -> np.ndarray:
    x = np.clip(x, 0, n - 1)
    low = np.floor(x).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    frac = x - low
    matrix = np.zeros((x.size, n))
    rows = np.arange(x.size)
    np.add.at(matrix, (rows, low), 1 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def _cubic(node: onnx.NodeProto, x: np.ndarray, n: int) -> np.ndarray:
    a = float_attribute(node, "cubic_coeff_a", -0.75)
    exclude_outside = bool(attribute(node, "exclude_outside", 0))
    base = np.floor(x)
    t = x - base
    distances = [t + 1, t, 1 - t, 2 - t]  # to taps base - 1, base, base + 1, base + 2

    def kernel(d: np.ndarray) -> np.ndarray:
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, far)

    weights = np.stack([kernel(d) for d in distances], axis=1)
    taps = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude_outside:
        weights = np.where((taps >= 0) & (taps < n), weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((x.size, n))
    rows = np.repeat(np.arange(x.size), 4)
    np.add.at(matrix, (rows, np.clip(taps, 0, n - 1).reshape(-1)), weights.reshape(-1))
    return matrix


def interpolation_matrix(node: onnx.NodeProto, resize: AxisResize) -> np.ndarray:
    """A [out, in] (float64): output i along the axis is sum_k A[i, k] * input k."""
    x = _original_coordinates(node, resize)
    mode = str(attribute(node, "mode", "nearest"))
    if mode == "nearest":
        return _nearest(node, x, resize.length_in)
    if mode == "linear":
        return _linear(x, resize.length_in)
    if mode == "cubic":
        return _cubic(node, x, resize.length_in)
    raise UnsupportedOpError(f"Resize node {node.name!r}: mode {mode!r} is not supported", ["Resize"])


# ---- application --------------------------------------------------------------------------------
def _apply_along(ctx: RuleContext, tensor: str, matrix: np.ndarray, axis: int, dims: list[int], like: str) -> str:
    """Contract forward ``axis`` of a gradient [M, *dims] with ``matrix`` [new, old]: [M, ..., new, ...]."""
    trailing = dims[axis + 1 :]
    if min(trailing, default=1) < 0:
        raise UnsupportedOpError("Resize: the dims after a resized axis must be static", ["Resize"])
    block = ctx.emit("Reshape", [tensor, ctx.ints([-1, dims[axis], int(np.prod(trailing, dtype=np.int64))])])
    return ctx.emit("MatMul", [ctx.constant(matrix.astype(ctx.float_dtype(like)), "interpolation"), block])


def _changed(node: onnx.NodeProto, axes: list[AxisResize]) -> list[tuple[AxisResize, np.ndarray]]:
    """Axes whose interpolation matrix is not the identity, last axis first."""
    pairs = [(resize, interpolation_matrix(node, resize)) for resize in axes]
    return sorted(
        [(r, m) for r, m in pairs if m.shape[0] != m.shape[1] or not np.array_equal(m, np.eye(m.shape[0]))],
        key=lambda pair: -pair[0].axis,
    )


def _static_dims(ctx: RuleContext, name: str) -> list[int]:
    shape = ctx.static_shape(name) or []
    return [int(d) if isinstance(d, int) else -1 for d in shape]


@vjp_rule("Resize")
def resize_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Apply the transposed interpolation matrix of every resized axis to the cotangent."""
    x = node.input[0]
    result = grads[0]
    dims = _static_dims(ctx, x)
    changes = _changed(node, resized_axes(ctx, node))
    for resize, _ in changes:
        dims[resize.axis] = resize.length_out
    for resize, matrix in changes:
        result = _apply_along(ctx, result, matrix.T, resize.axis, dims, x)  # type: ignore[arg-type]
        dims[resize.axis] = resize.length_in
    return [ctx.reshape_like(result, x)]  # type: ignore[arg-type]


@jvp_rule("Resize")
def resize_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Apply the interpolation matrix of every resized axis to the tangent."""
    x = node.input[0]
    result = tangents[0]
    dims = _static_dims(ctx, x)
    for resize, matrix in _changed(node, resized_axes(ctx, node)):
        result = _apply_along(ctx, result, matrix, resize.axis, dims, x)  # type: ignore[arg-type]
        dims[resize.axis] = resize.length_out
    return [ctx.reshape_like(result, node.output[0])]  # type: ignore[arg-type]
