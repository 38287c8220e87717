"""The convolution bound against the exact norm of the convolution's dense matrix.

The dense matrix is built here entry by entry from the ONNX Conv definition (independently of
the FFT argument in fimaudit/bounds/rules/conv.py), for random geometries: stride, padding,
dilation, groups, 1-D and 2-D. Certified means bound >= exact on every case; the stated
tightness factor is 2 for inputs at least twice the kernel's extent (on tinier inputs the
padding dominates and no factor holds: one output reading one real pixel; on the sample
models' layers the ratio is much closer to 1, see test_conv_tightness_on_sample_layers).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.bounds.linalg import RELATIVE_MARGIN
from fimaudit.bounds.rules.conv import conv_norm_bound

TIGHTNESS_FACTOR = 2.0  # stated factor: bound / exact on small random convolutions


def conv_matrix(weight: np.ndarray, spatial: list[int], strides: list[int], pads: list[int], dilations: list[int], groups: int) -> np.ndarray:
    """The convolution as a dense matrix: the ONNX definition applied to every basis input,
    y[o, p] = sum over input channels of the group and taps t of w[o, c, t] x_pad[c, p * s + t * d]."""
    c_out, c_in_g = weight.shape[:2]
    rank = len(spatial)
    kernel = weight.shape[2:]
    c_in = c_in_g * groups
    size = c_in * int(np.prod(spatial))
    basis = np.eye(size).reshape(size, c_in, *spatial)
    padded = np.pad(basis, [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)])
    out = [(spatial[i] + pads[i] + pads[i + rank] - ((kernel[i] - 1) * dilations[i] + 1)) // strides[i] + 1 for i in range(rank)]
    result = np.zeros((size, c_out, *out))
    per_group = c_out // groups
    for tap in itertools.product(*[range(k) for k in kernel]):
        window = tuple(slice(tap[i] * dilations[i], tap[i] * dilations[i] + (out[i] - 1) * strides[i] + 1, strides[i]) for i in range(rank))
        patch = padded[(slice(None), slice(None), *window)]  # [size, c_in, *out]
        for g in range(groups):
            block = patch[:, g * c_in_g : (g + 1) * c_in_g]
            taps = weight[(slice(g * per_group, (g + 1) * per_group), slice(None), *tap)]  # [per_group, c_in_g]
            result[:, g * per_group : (g + 1) * per_group] += np.einsum("oc,bc...->bo...", taps, block)
    return result.reshape(size, -1).T


geometries = st.fixed_dictionaries({
    "rank": st.sampled_from([1, 2]),
    "groups": st.sampled_from([1, 2]),
    "c_in_g": st.integers(1, 2),
    "c_out_g": st.integers(1, 2),
    "kernel": st.integers(1, 3),
    "stride": st.integers(1, 3),
    "dilation": st.integers(1, 2),
    "size": st.integers(3, 8),
    "pad": st.integers(0, 2),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=60, deadline=None)
@given(geometries)
def test_conv_bound_is_above_the_exact_norm(g: dict) -> None:
    rank, groups = g["rank"], g["groups"]
    kernel = [g["kernel"]] * rank
    dilations = [g["dilation"]] * rank
    spatial = [g["size"]] * rank
    pads = [g["pad"]] * (2 * rank)
    strides = [g["stride"]] * rank
    extent = (g["kernel"] - 1) * g["dilation"] + 1
    if extent > g["size"] + 2 * g["pad"]:
        return
    weight = np.random.default_rng(g["seed"]).standard_normal((g["c_out_g"] * groups, g["c_in_g"], *kernel))
    exact = float(np.linalg.norm(conv_matrix(weight, spatial, strides, pads, dilations, groups), 2))
    padded = [s + 2 * g["pad"] for s in spatial]
    bound, _method = conv_norm_bound(weight, padded, strides, dilations, groups)
    assert bound >= exact
    if g["size"] >= 2 * extent:  # the stated factor needs inputs at least twice the kernel's extent
        assert bound <= TIGHTNESS_FACTOR * exact * (1 + RELATIVE_MARGIN) + 1e-12


@pytest.mark.parametrize("model_name", ["vgg_small.onnx", "resnet_small.onnx", "densenet_small.onnx"])
def test_conv_tightness_on_sample_layers(samples_dir, model_name: str) -> None:
    """Trained 3x3 convolutions on 8x8 inputs: bound within 1.5x of the exact norm."""
    from onnx import numpy_helper

    from fimaudit.graph.loader import load_model

    model = load_model(samples_dir / model_name).proto
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = weights[node.input[1]].astype(np.float64)
        strides = list(attrs.get("strides", [1, 1]))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        dilations = list(attrs.get("dilations", [1, 1]))
        spatial = [8, 8]
        if weight.shape[1] * 64 > 512:
            continue  # keep the dense reference small
        matrix = conv_matrix(weight, spatial, strides, pads, dilations, 1)
        exact = float(np.sqrt(np.linalg.eigvalsh(matrix.T @ matrix)[-1]))
        padded = [8 + pads[0] + pads[2], 8 + pads[1] + pads[3]]
        bound, _ = conv_norm_bound(weight, padded, strides, dilations, 1)
        assert exact <= bound <= 1.5 * exact
        checked += 1
    assert checked >= 1


@settings(max_examples=60, deadline=None)
@given(geometries)
def test_cropped_kernel_bound_is_above_the_exact_norm(g: dict) -> None:
    """The rule's path: taps that only read padding dropped first (asymmetric pads included)."""
    from fimaudit.bounds.rules.conv import active_kernel

    rank, groups = g["rank"], g["groups"]
    kernel = [g["kernel"]] * rank
    dilations = [g["dilation"]] * rank
    spatial = [max(1, g["size"] - 2)] * rank
    begin, end = [g["pad"] + 1] * rank, [g["pad"]] * rank
    if (g["kernel"] - 1) * g["dilation"] + 1 > spatial[0] + begin[0] + end[0]:
        return
    weight = np.random.default_rng(g["seed"]).standard_normal((g["c_out_g"] * groups, g["c_in_g"], *kernel))
    exact = float(np.linalg.norm(conv_matrix(weight, spatial, [g["stride"]] * rank, begin + end, dilations, groups), 2))
    cropped, padded = active_kernel(weight, spatial, [g["stride"]] * rank, dilations, begin, end)
    bound, _ = conv_norm_bound(cropped, padded, [g["stride"]] * rank, dilations, groups)
    assert bound >= exact
