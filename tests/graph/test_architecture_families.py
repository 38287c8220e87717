"""Families of issue 16 item 9, on graphs built in code in the forms the exporters write:
MobileNetV2/V3 and EfficientNet inverted residuals (depthwise Conv with group = channels,
HardSwish/HardSigmoid, Sigmoid + Mul as SiLU, GlobalAveragePool or ReduceMean in the gate, 1x1
convs or dense layers in the gate), SqueezeNet's Fire modules, and attention through masks
(DistilBERT's Where on a boolean mask, additive masks, SDPA's NaN guard after the Softmax).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fimaudit.graph.architecture import FAMILIES, recognise_architecture
from tests.graph.test_architecture import RNG, Builder


def depthwise(b: Builder, x: str, channels: int, k: int = 3, stride: int = 1) -> str:
    weight = b.const((RNG.standard_normal((channels, 1, k, k)) * 0.5).astype(np.float32))
    return b.op("Conv", [x, weight], group=channels, pads=[k // 2] * 4, strides=[stride, stride])


def pointwise(b: Builder, x: str, c_in: int, c_out: int) -> str:
    return b.op("Conv", [x, b.const((RNG.standard_normal((c_out, c_in, 1, 1)) / np.sqrt(c_in)).astype(np.float32)),
                         b.const(np.zeros(c_out, np.float32))])


def activation(b: Builder, x: str, kind: str) -> str:
    if kind == "hardswish":
        return b.op("HardSwish", [x])
    if kind == "silu":  # EfficientNet as exported: x * sigmoid(x)
        return b.op("Mul", [x, b.op("Sigmoid", [x])])
    return b.op("Relu", [x])


def squeeze_excitation(b: Builder, x: str, channels: int, gate: str, dense: bool, reduce_mean: bool) -> str:
    pooled = b.op("ReduceMean", [x], axes=[2, 3], keepdims=1) if reduce_mean else b.op("GlobalAveragePool", [x])
    hidden = max(1, channels // 4)
    if dense:  # Keras: Dense layers on the flattened vector, reshaped back to [1, C, 1, 1]
        flat = b.op("Flatten", [pooled])
        z = b.dense(b.op("Relu", [b.dense(flat, channels, hidden)]), hidden, channels)
    else:
        z = pointwise(b, b.op("Relu", [pointwise(b, pooled, channels, hidden)]), hidden, channels)
    g = b.op("HardSigmoid", [z], alpha=1.0 / 6.0, beta=0.5) if gate == "hardsigmoid" else b.op("Sigmoid", [z])
    if dense:
        g = b.op("Reshape", [g, b.const(np.array([1, channels, 1, 1], np.int64))])
    return b.op("Mul", [x, g])


def inverted_residual(b: Builder, x: str, c_in: int, c_out: int, expand: int, act: str, se: str | None,
                      dense_gate: bool = False, reduce_mean: bool = False, stride: int = 1) -> str:
    hidden = c_in * expand
    h = activation(b, pointwise(b, x, c_in, hidden), act) if expand > 1 else x
    h = activation(b, depthwise(b, h, hidden, stride=stride), act)
    if se:
        h = squeeze_excitation(b, h, hidden, se, dense_gate, reduce_mean)
    y = pointwise(b, h, hidden, c_out)
    return b.op("Add", [x, y]) if c_in == c_out and stride == 1 else y


def mobilenet(act: str = "hardswish", se: str | None = "hardsigmoid", dense_gate: bool = False, reduce_mean: bool = False,
              shape: tuple[int, ...] = (1, 3, 8, 8), classes: int = 3) -> onnx.ModelProto:
    b = Builder(list(shape))
    stem = activation(b, b.conv("x", shape[1], 4, bn=False), act)
    h = inverted_residual(b, stem, 4, 4, 1, act, None)  # expansion 1 (MobileNetV2's first block)
    h = inverted_residual(b, h, 4, 4, 3, act, se, dense_gate, reduce_mean)
    h = inverted_residual(b, h, 4, 6, 2, act, se, dense_gate, reduce_mean, stride=2)
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    return b.model(b.dense(pooled, 6, classes))


@pytest.mark.parametrize("act,se,dense_gate,reduce_mean", [
    ("hardswish", "hardsigmoid", False, False),  # MobileNetV3 (torch.onnx)
    ("hardswish", "hardsigmoid", False, True),  # MobileNetV3 (dynamo: ReduceMean)
    ("silu", "sigmoid", False, False),  # EfficientNet (SiLU written out)
    ("silu", "sigmoid", True, True),  # EfficientNet (Keras: dense gate layers)
    ("relu", None, False, False),  # MobileNetV2 (no gate)
], ids=["mbv3", "mbv3-reducemean", "efficientnet", "efficientnet-keras", "mbv2"])
def test_inverted_residuals_are_mobilenet(act: str, se: str | None, dense_gate: bool, reduce_mean: bool) -> None:
    architecture = recognise_architecture(mobilenet(act, se, dense_gate, reduce_mean))
    assert architecture.family == "mobilenet", architecture.reasons
    # the other families' reasons (a gate-free MobileNetV2 also fits the residual pattern: the
    # more specific family is named first)
    assert set(architecture.reasons) >= set(FAMILIES) - {"mobilenet", "resnet"}
    blocks = architecture.blocks
    assert [b.kind for b in blocks] == ["inverted_residual"] * 3
    assert [b.details["expand"] is not None for b in blocks] == [False, True, True]
    assert [b.join is not None for b in blocks] == [True, True, False]
    gates = [b.details["squeeze_excitation"] for b in blocks]
    if se is None:
        assert gates == [None, None, None]
    else:
        assert gates[0] is None
        assert [g["gate"] for g in gates[1:]] == ["HardSigmoid" if se == "hardsigmoid" else "Sigmoid"] * 2
    document = architecture.to_dict()
    assert document["block_counts"] == {"inverted_residual": 3}
    assert document["blocks"][1]["details"]["depthwise"] in document["blocks"][1]["nodes"]


def test_depthwise_separable_residual_without_expansion_or_gate_stays_resnet() -> None:
    b = Builder([1, 3, 8, 8])
    stem = b.op("Relu", [b.conv("x", 3, 4, bn=False)])
    h = inverted_residual(b, stem, 4, 4, 1, "relu", None)
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    architecture = recognise_architecture(b.model(b.dense(pooled, 4, 3)))
    assert architecture.family == "resnet"
    assert "no inverted residual block" in architecture.reasons["mobilenet"]


def test_mobilenet_v1_chain_stays_vgg() -> None:
    b = Builder([1, 3, 8, 8])
    h = b.op("Relu", [b.conv("x", 3, 4, bn=False)])
    for _ in range(2):
        h = b.op("Relu", [pointwise(b, b.op("Relu", [depthwise(b, h, 4)]), 4, 4)])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    architecture = recognise_architecture(b.model(b.dense(pooled, 4, 3)))
    assert architecture.family == "vgg"


def fire(b: Builder, x: str, c_in: int, squeeze: int, expand: int) -> str:
    s = b.op("Relu", [pointwise(b, x, c_in, squeeze)])
    left = b.op("Relu", [pointwise(b, s, squeeze, expand)])
    right = b.op("Relu", [b.conv(s, squeeze, expand, k=3, bn=False)])
    return b.op("Concat", [left, right], axis=1)


@pytest.mark.parametrize("bypass", [False, True])
def test_fire_modules_are_squeezenet(bypass: bool) -> None:
    b = Builder([1, 3, 8, 8])
    h = b.op("MaxPool", [b.op("Relu", [b.conv("x", 3, 8, bn=False)])], kernel_shape=[2, 2], strides=[2, 2])
    h = fire(b, h, 8, 2, 4)
    f = fire(b, h, 8, 2, 4)
    h = b.op("Add", [h, f]) if bypass else f
    h = b.op("Relu", [pointwise(b, h, 8, 3)])  # SqueezeNet's classifier conv
    logits = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    architecture = recognise_architecture(b.model(logits))
    assert architecture.family == "squeezenet", architecture.reasons
    kinds = [block.kind for block in architecture.blocks]
    assert kinds == (["fire", "fire", "residual"] if bypass else ["fire", "fire"])
    assert architecture.blocks[0].details["expand_kxk"] != architecture.blocks[0].details["expand_1x1"]


def distilbert_attention(mask: str) -> onnx.ModelProto:
    """One attention sublayer with the mask forms exporters write (see the module doc)."""
    b = Builder([1, 5, 8])
    q, k, v = (b.dense("x", 8, 8, gemm=False) for _ in range(3))
    scores = b.op("Div", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])]), b.const(np.float32(8 ** 0.5))])
    condition = b.op("Expand", [b.op("Equal", ["attention_mask", b.const(np.array(0, np.int64))]), b.op("Shape", [scores])])
    if mask == "where":  # masked_fill(mask, finfo.min)
        scores = b.op("Where", [condition, b.const(np.float32(-3.4e38)), scores])
    elif mask == "additive-from-input":  # an additive mask computed from the audited input
        padding = b.op("Less", [b.op("ReduceSum", ["x"], axes=[2], keepdims=1), b.const(np.float32(-100.0))])
        scores = b.op("Add", [scores, b.op("Mul", [b.op("Cast", [padding], to=TensorProto.FLOAT), b.const(np.float32(-1e9))])])
    weights = b.op("Softmax", [scores], axis=-1)
    if mask in ("where", "where-after"):  # a Where between Softmax and MatMul
        weights = b.op("Where", [condition, b.const(np.float32(0.0)), weights])
    if mask == "nan-guard":  # Where(IsNaN(p), 0, p)
        weights = b.op("Where", [b.op("IsNaN", [weights]), b.const(np.float32(0.0)), weights])
    out = b.op("Add", ["x", b.dense(b.op("MatMul", [weights, v]), 8, 8, gemm=False)])
    model = b.model(b.dense(b.op("ReduceMean", [out], axes=[1], keepdims=0), 8, 3))
    model.graph.input.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 1, 5]))
    return model


@pytest.mark.parametrize("mask", ["where", "where-after", "additive-from-input", "nan-guard"])
def test_attention_is_recognised_through_masks(mask: str) -> None:
    architecture = recognise_architecture(distilbert_attention(mask))
    assert architecture.family == "transformer", architecture.reasons
    assert [block.kind for block in architecture.blocks] == ["attention"]


def test_softmax_classifier_head_is_not_attention() -> None:
    b = Builder([1, 6])
    h = b.op("Softmax", [b.dense(b.op("Relu", [b.dense("x", 6, 5)]), 5, 3)])
    assert recognise_architecture(b.model(h)).family == "mlp"
