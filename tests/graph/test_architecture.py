"""Architecture recognition: sample models, exporter variants built in code, and the torchvision
corpus (both PyTorch exporters) when /work/corpus holds it.

The variants are what the two PyTorch exporters and others actually write for the same layer:
BatchNorm folded or not, GlobalAveragePool or ReduceMean, Gemm or MatMul + Add, LayerNorm fused
or as ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div, GELU as one op or as Div-Erf-Add-Mul-Mul.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.graph.architecture import FAMILIES, architecture_lines, recognise_architecture
from fimaudit.graph.loader import load_model
from tests.conftest import SAMPLES, sample_manifest

RNG = np.random.default_rng(7)
CORPUS = Path(os.environ.get("FIMAUDIT_CORPUS", "/work/corpus"))
# torchvision architecture -> the family fimaudit must name (MobileNetV3: inverted residuals with
# squeeze-excitation gates, the mobilenet family of issue 16 item 9).
CORPUS_FAMILIES = {"resnet": "resnet", "vgg": "vgg", "densenet": "densenet", "vit": "transformer", "mobilenet": "mobilenet"}


# ----------------------------------------------------------------------------- sample models


@pytest.mark.parametrize("entry", sample_manifest(), ids=lambda e: e["file"])
def test_sample_model_family(entry: dict) -> None:
    model = load_model(SAMPLES / entry["file"]).proto
    architecture = recognise_architecture(model)
    assert architecture.family == entry["family"]
    assert set(architecture.reasons) == set(FAMILIES) - {entry["family"]}


def test_sample_blocks_name_their_nodes() -> None:
    resnet = recognise_architecture(load_model(SAMPLES / "resnet_small.onnx").proto).to_dict()
    assert resnet["block_counts"] == {"residual": 2}
    assert [b["details"]["shortcut"] for b in resnet["blocks"]] == ["identity", "projection"]
    assert resnet["blocks"][1]["details"]["shortcut_nodes"] == ["node_Conv_105"]
    densenet = recognise_architecture(load_model(SAMPLES / "densenet_small.onnx").proto).to_dict()
    assert densenet["block_counts"] == {"dense_layer": 3}
    assert densenet["blocks"][0]["details"]["concat"] == "/block/block.0/Concat"
    vit = recognise_architecture(load_model(SAMPLES / "vit_small.onnx").proto).to_dict()
    assert vit["block_counts"] == {"attention": 2, "mlp": 2}
    assert [b["kind"] for b in vit["blocks"]] == ["attention", "mlp", "attention", "mlp"]
    assert "/blocks/blocks.0/attn/Softmax" in vit["blocks"][0]["nodes"]
    assert vit["fused_operators"]["activation"] == 2  # GELU written as Div-Erf-Add-Mul-Mul
    vgg = recognise_architecture(load_model(SAMPLES / "vgg_small.onnx").proto).to_dict()
    assert vgg["block_counts"] == {"conv_stage": 2, "classifier": 1}


def test_inspect_lines_are_printable() -> None:
    document = recognise_architecture(load_model(SAMPLES / "resnet_small.onnx").proto).to_dict()
    document["blocks"][0]["nodes"][0] = "evil\x1b[2Jname\n"
    lines = architecture_lines(document)
    assert lines[0] == "architecture: resnet (2 residual)"
    assert all(ch.isprintable() for line in lines for ch in line)


# ----------------------------------------------------------------------------- graphs in code


class Builder:
    """A small float graph from input 'x' built node by node (names follow the op)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = shape
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        self.count += 1
        out = f"{op_type.lower()}{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.count}", **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, stride: int = 1, bn: bool = True) -> str:
        y = self.op("Conv", [x, self.const(RNG.standard_normal((c_out, c_in, k, k)).astype(np.float32))],
                    pads=[k // 2] * 4, strides=[stride, stride])
        if bn:
            params = [np.abs(RNG.standard_normal(c_out)).astype(np.float32) + 0.5 for _ in range(4)]
            y = self.op("BatchNormalization", [y, *[self.const(p) for p in params]])
        return y

    def dense(self, x: str, n_in: int, n_out: int, gemm: bool = True) -> str:
        if gemm:
            return self.op("Gemm", [x, self.const(RNG.standard_normal((n_out, n_in)).astype(np.float32)),
                                    self.const(np.zeros(n_out, np.float32))], transB=1)
        y = self.op("MatMul", [x, self.const(RNG.standard_normal((n_in, n_out)).astype(np.float32))])
        return self.op("Add", [self.const(np.zeros(n_out, np.float32)), y])

    def gelu_decomposed(self, x: str) -> str:
        d = self.op("Div", [x, self.const(np.float32(math.sqrt(2)))])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.const(np.float32(1.0))])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.const(np.float32(0.5))])

    def layernorm_decomposed(self, x: str, dim: int) -> str:
        mean = self.op("ReduceMean", [x], axes=[-1])
        centred = self.op("Sub", [x, mean])
        square = self.op("Pow", [centred, self.const(np.float32(2.0))])
        var = self.op("ReduceMean", [square], axes=[-1])
        shifted = self.op("Add", [var, self.const(np.float32(1e-5))])
        root = self.op("Sqrt", [shifted])
        normed = self.op("Div", [centred, root])
        scaled = self.op("Mul", [normed, self.const(np.ones(dim, np.float32))])
        return self.op("Add", [scaled, self.const(np.zeros(dim, np.float32))])

    def model(self, output: str, opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "built", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model


def _transformer(decomposed: bool) -> onnx.ModelProto:
    b = Builder([1, 5, 8])
    x = "x"
    normed = b.layernorm_decomposed(x, 8) if decomposed else b.op(
        "LayerNormalization", [x, b.const(np.ones(8, np.float32)), b.const(np.zeros(8, np.float32))], axis=-1)
    q, k, v = (b.dense(normed, 8, 8, gemm=False) for _ in range(3))
    kt = b.op("Transpose", [k], perm=[0, 2, 1])
    scores = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(np.float32(8 ** -0.5))])
    weights = b.op("Softmax", [scores], axis=-1)
    context = b.op("MatMul", [weights, v])
    x = b.op("Add", [x, b.dense(context, 8, 8, gemm=False)])
    normed = b.layernorm_decomposed(x, 8) if decomposed else b.op(
        "LayerNormalization", [x, b.const(np.ones(8, np.float32)), b.const(np.zeros(8, np.float32))], axis=-1)
    hidden = b.dense(normed, 8, 16, gemm=False)
    activated = b.gelu_decomposed(hidden) if decomposed else b.op("Gelu", [hidden])
    x = b.op("Add", [x, b.dense(activated, 16, 8, gemm=False)])
    pooled = b.op("ReduceMean", [x], axes=[1], keepdims=0)
    return b.model(b.dense(pooled, 8, 3), opset=17 if decomposed else 20)


@pytest.mark.parametrize("decomposed", [False, True], ids=["fused", "decomposed"])
def test_transformer_with_fused_or_decomposed_layernorm_and_gelu(decomposed: bool) -> None:
    architecture = recognise_architecture(_transformer(decomposed))
    assert architecture.family == "transformer"
    document = architecture.to_dict()
    assert document["block_counts"] == {"attention": 1, "mlp": 1}
    assert document["blocks"][0]["details"]["layernorm"] is not None
    assert document["blocks"][1]["details"]["activations"] == ["Gelu"]
    if decomposed:
        assert document["fused_operators"] == {"layernorm": 2, "activation": 1}


def _resnet(pool: str, folded: bool) -> onnx.ModelProto:
    b = Builder([1, 2, 8, 8])
    stem = b.op("Relu", [b.conv("x", 2, 4, bn=not folded)])
    branch = b.conv(b.op("Relu", [b.conv(stem, 4, 4, bn=not folded)]), 4, 4, bn=not folded)
    out = b.op("Relu", [b.op("Add", [branch, stem])])
    branch = b.conv(b.op("Relu", [b.conv(out, 4, 8, stride=2, bn=not folded)]), 8, 8, bn=not folded)
    shortcut = b.conv(out, 4, 8, k=1, stride=2, bn=not folded)
    out = b.op("Relu", [b.op("Add", [shortcut, branch])])
    pooled = b.op("GlobalAveragePool", [out]) if pool == "gap" else b.op("ReduceMean", [out], axes=[2, 3])
    flat = b.op("Flatten", [pooled])
    return b.model(b.dense(flat, 8, 3, gemm=pool == "gap"))


@pytest.mark.parametrize("pool,folded", [("gap", False), ("reducemean", True)])
def test_resnet_variants(pool: str, folded: bool) -> None:
    architecture = recognise_architecture(_resnet(pool, folded)).to_dict()
    assert architecture["family"] == "resnet"
    assert [b["details"]["shortcut"] for b in architecture["blocks"]] == ["identity", "projection"]


def test_inception_concat_is_not_dense_and_fits_no_family() -> None:
    b = Builder([1, 2, 8, 8])
    stem = b.op("Relu", [b.conv("x", 2, 4)])
    left = b.op("Relu", [b.conv(stem, 4, 4, k=1)])
    right = b.op("Relu", [b.conv(stem, 4, 4, k=3)])
    joined = b.op("Concat", [left, right], axis=1)
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [joined])])
    architecture = recognise_architecture(b.model(b.dense(pooled, 8, 3)))
    assert architecture.family == "unknown"
    assert set(architecture.reasons) == set(FAMILIES)
    assert "none appends conv features" in architecture.reasons["densenet"]
    assert "not a plain chain" in architecture.reasons["vgg"]


def test_squeeze_excitation_gate_is_not_a_resnet() -> None:
    b = Builder([1, 4, 6, 6])
    features = b.op("Relu", [b.conv("x", 4, 4)])
    squeezed = b.op("Flatten", [b.op("GlobalAveragePool", [features])])
    gate = b.op("Reshape", [b.op("Sigmoid", [b.dense(squeezed, 4, 4)]), b.const(np.array([1, 4, 1, 1], np.int64))])
    gated = b.op("Mul", [features, gate])
    out = b.op("Add", [gated, "x"])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [out])])
    architecture = recognise_architecture(b.model(b.dense(pooled, 4, 3)))
    assert architecture.family == "unknown"
    assert "gating" in architecture.reasons["resnet"]


def test_weightless_merges_keep_a_chain_plain() -> None:
    """Exporters write some pooling as sums of slices of one tensor: not a skip connection."""
    b = Builder([1, 2, 8, 8])
    h = b.op("Relu", [b.conv(b.op("Relu", [b.conv("x", 2, 4)]), 4, 4)])
    left = b.op("Slice", [h, b.const(np.array([0], np.int64)), b.const(np.array([4], np.int64)), b.const(np.array([2], np.int64))])
    right = b.op("Slice", [h, b.const(np.array([4], np.int64)), b.const(np.array([8], np.int64)), b.const(np.array([2], np.int64))])
    summed = b.op("Add", [left, right])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [summed])])
    assert recognise_architecture(b.model(b.dense(pooled, 4, 3))).family == "vgg"


def test_mlp_with_matmul_and_add() -> None:
    b = Builder([1, 6])
    h = b.op("Relu", [b.dense("x", 6, 5, gemm=False)])
    assert recognise_architecture(b.model(b.dense(h, 5, 3, gemm=False))).family == "mlp"


# ----------------------------------------------------------------------------- corpus


def _corpus_entries() -> list[dict]:
    manifest = CORPUS / "manifest.json"
    if not manifest.is_file():
        return []
    return [e for e in json.loads(manifest.read_text())["models"] if (CORPUS / e["file"]).is_file()]


def _expected_family(arch: str) -> str | None:
    return next((family for prefix, family in CORPUS_FAMILIES.items() if arch.startswith(prefix)), None)


@pytest.mark.skipif(not _corpus_entries(), reason=f"no torchvision corpus at {CORPUS}")
@pytest.mark.parametrize("entry", _corpus_entries(), ids=lambda e: e["file"])
def test_corpus_family(entry: dict) -> None:
    expected = _expected_family(entry["arch"])
    if expected is None:
        pytest.skip(f"no expected family for {entry['arch']}")
    if entry.get("file_size", 0) > 200 << 20:
        pytest.skip("larger than 200 MB: kept out of the test run")
    architecture = recognise_architecture(load_model(CORPUS / entry["file"]).proto)
    assert architecture.family == expected, architecture.reasons
