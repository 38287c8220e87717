"""Rebuild the bundled sample ONNX models from scikit-learn's digits dataset.

Development-only script: it needs torch and scikit-learn, which neither the
``fimaudit`` package nor its tests import. Run it from anywhere::

    /work/venv/bin/python sample_models/build_samples.py [--out-dir DIR]

Everything is deterministic (fixed split, fixed seeds, one thread), so a
rebuild with the same library versions reproduces the same weights. Each model
is checked with ``onnx.checker`` and against torch outputs in ONNX Runtime
before ``manifest.json`` is written.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

LOG = logging.getLogger("build_samples")

TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 20  # the torch 2.13 dynamo exporter's default
NUM_SAMPLES = 64  # images bundled as digits_test.npy
ATOL = 1e-4  # max |onnxruntime - torch| accepted for every model
SPLIT_SEED = 0
TEST_FRACTION = 0.2


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # float32 [N, 1, 8, 8], values in [0, 1]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray


def load_split() -> Digits:
    """Digits as float32 [N, 1, 8, 8] / 16, stratified 80/20 split, random_state=0."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return Digits(
        np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te
    )


# ------------------------------------------------------------------- architectures


class MLP(nn.Module):
    """Flatten -> Linear(64, hidden) -> Tanh -> Linear(hidden, out)."""

    def __init__(self, hidden: int = 32, out: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WithSoftmax(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), dim=1)


class WithSigmoid(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.inner(x))


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class VGGSmall(nn.Module):
    """Plain chain: [conv-bn-relu]x2, pool, conv-bn-relu, pool, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, 8),
            *conv_bn_relu(8, 8),
            nn.MaxPool2d(2),
            *conv_bn_relu(8, 16),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut, then relu; 1x1 projection when shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(1, 16))
        self.block1 = BasicBlock(16, 16, stride=1)
        self.block2 = BasicBlock(16, 32, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 producing `growth` channels, concatenated to its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class DenseNetSmall(nn.Module):
    def __init__(self, stem: int = 16, growth: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, stem, 3, padding=1, bias=False)
        block = []
        channels = stem
        for _ in range(layers):
            block.append(DenseLayer(channels, growth))
            channels += growth
        self.block = nn.Sequential(*block)
        self.transition = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, stem, 1, bias=False),
            nn.AvgPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(stem, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(self.block(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out so the graph shows MatMul-Softmax-MatMul."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.dim = dim
        self.tokens = tokens
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, T, 3*D] -> [B, T, 3, H, Dh] -> [3, B, H, T, Dh]. Reshaping with a
        # literal -1 batch and the fixed token count exports as a Reshape by a
        # constant shape (no Shape/Gather arithmetic) while the batch stays dynamic.
        qkv = self.qkv(x).reshape(-1, self.tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attn, v)  # [B, H, T, Dh]
        return self.proj(out.transpose(1, 2).reshape(-1, self.tokens, self.dim))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, tokens: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, tokens)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViTSmall(nn.Module):
    def __init__(
        self, dim: int = 32, depth: int = 2, heads: int = 2, mlp_dim: int = 64
    ) -> None:
        super().__init__()
        self.dim = dim
        self.patch = nn.Conv2d(1, dim, kernel_size=2, stride=2)  # 8x8 -> 4x4 = 16 tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, heads, mlp_dim, tokens=17) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).reshape(-1, self.dim, 16).transpose(1, 2)  # [B, 16, D]
        cls = self.cls_token.expand(tokens.shape[0], 1, self.dim)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        x = self.blocks(x)
        return self.head(self.norm(x[:, 0]))


# ------------------------------------------------------------------------ training


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    epochs: int,
    lr: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int = 64,
) -> nn.Module:
    """Minibatch Adam; shuffling uses its own generator seeded with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    return model


def binary_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out[:, 0], target.float())


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def accuracy(outputs: np.ndarray, labels: np.ndarray, kind: str) -> float:
    if kind == "sigmoid":
        pred = (outputs[:, 0] > 0.5).astype(np.int64)
    else:
        pred = outputs.argmax(axis=1)
    return float((pred == labels).mean())


# ------------------------------------------------------------------------- export


def export_torchscript(
    model: nn.Module, path: Path, output_name: str, **kwargs: object
) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=TORCHSCRIPT_OPSET,
        input_names=["input"],
        output_names=[output_name],
        dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
        **kwargs,
    )


def export_dynamo_fixed_batch(model: nn.Module, path: Path, output_name: str) -> None:
    """Dynamo exporter, batch fixed to 1, weights in `<file>.data` beside the model."""
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=True,
        external_data=True,
        opset_version=DYNAMO_OPSET,
        input_names=["input"],
        output_names=[output_name],
    )
    strip_stack_traces(path)


def strip_stack_traces(path: Path) -> None:
    """Drop the per-node Python stack traces the dynamo exporter records.

    They hold absolute paths of the build machine and this script's line
    numbers, so keeping them would make the file depend on where and from
    which revision it was built. The other node metadata (namespace, module
    class hierarchy, fx node) is kept.
    """
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))  # initializers stay references to <file>.data


def initializers_to_constants(src: Path, dst: Path) -> None:
    """Rewrite every initializer as a Constant node at the head of the graph."""
    model = onnx.load(str(src))
    graph = model.graph
    constants = [
        onnx.helper.make_node(
            "Constant", [], [init.name], name=f"const_{init.name}", value=init
        )
        for init in graph.initializer
    ]
    init_names = {init.name for init in graph.initializer}
    if any(inp.name in init_names for inp in graph.input):
        raise RuntimeError(f"{src.name}: initializers are listed as graph inputs")
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    onnx.save(model, str(dst))


# ----------------------------------------------------------------- verification


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_ort(path: Path, x: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    if fixed_batch is None:
        return sess.run(None, {name: x})[0]
    return np.concatenate(
        [sess.run(None, {name: x[i : i + fixed_batch]})[0] for i in range(len(x))]
    )


def verify(
    path: Path, model: nn.Module, x: np.ndarray, fixed_batch: int | None
) -> np.ndarray:
    """check_model by path (so external data is found), then ORT vs torch."""
    onnx.checker.check_model(str(path.resolve()), full_check=True)
    got = run_ort(path, x, fixed_batch)
    want = predict(model, x)
    diff = float(np.abs(got - want).max())
    LOG.info("%s: max |ort - torch| = %.2e", path.name, diff)
    if got.shape != want.shape or not diff < ATOL:
        raise RuntimeError(
            f"{path.name}: onnxruntime disagrees with torch "
            f"(shapes {got.shape} vs {want.shape}, max diff {diff:.3e})"
        )
    if fixed_batch is None:
        batch_one = run_ort(path, x[:3], fixed_batch=1)
        if not np.abs(batch_one - want[:3]).max() < ATOL:
            raise RuntimeError(f"{path.name}: batch-1 run disagrees with torch")
    return got


def verify_loads_elsewhere(path: Path) -> None:
    """The external data must be found relative to the model, not the CWD."""
    data = path.with_name(path.name + ".data")
    if not data.is_file():
        raise RuntimeError(f"{path.name}: expected external data file {data.name}")
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            ort_session(path.resolve())
        finally:
            os.chdir(here)


def op_histogram(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


# -------------------------------------------------------------------------- build


@dataclasses.dataclass
class Entry:
    file: str
    family: str
    exporter: str
    output_name: str
    output_kind: str
    num_classes: int
    params: int
    fixed_batch: int | None = None
    description: str = ""
    labels: str = "digit"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def targets(entry: Entry, digit_labels: np.ndarray) -> np.ndarray:
    """The labels a model is scored against: the digit, or `digit % 2` for "odd"."""
    return digit_labels % 2 if entry.labels == "odd" else digit_labels


def manifest_record(
    entry: Entry, path: Path, outputs_test: np.ndarray, y_test: np.ndarray
) -> dict[str, object]:
    """outputs_test: ONNX Runtime outputs on the whole test split, in order."""
    model = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    batch: int | str = entry.fixed_batch if entry.fixed_batch else "N"
    out_dim = 1 if entry.output_kind == "sigmoid" else entry.num_classes
    has_external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    )
    y_test = targets(entry, y_test)
    return {
        "file": entry.file,
        "family": entry.family,
        "exporter": entry.exporter,
        "opset": opset,
        "ir_version": model.ir_version,
        "input": {"name": "input", "shape": [batch, 1, 8, 8], "dtype": "float32"},
        "output": {
            "name": entry.output_name,
            "kind": entry.output_kind,
            "shape": [batch, out_dim],
        },
        "num_classes": entry.num_classes,
        "labels": entry.labels,
        "test_accuracy": round(accuracy(outputs_test, y_test, entry.output_kind), 4),
        "sample_accuracy": round(
            accuracy(outputs_test[:NUM_SAMPLES], y_test[:NUM_SAMPLES], entry.output_kind), 4
        ),
        "has_external_data": has_external,
        "external_data_file": f"{entry.file}.data" if has_external else None,
        "params": entry.params,
        "description": entry.description,
    }


def build(out_dir: Path) -> list[dict[str, object]]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    data = load_split()
    x_sample = data.x_test[:NUM_SAMPLES]
    y_sample = data.y_test[:NUM_SAMPLES]
    np.save(out_dir / "digits_test.npy", x_sample)
    np.save(out_dir / "digits_test_labels.npy", y_sample)
    np.savez(out_dir / "digits_test.npz", input=x_sample)

    ce = F.cross_entropy
    records = []

    def finish(entry: Entry, model: nn.Module) -> None:
        path = out_dir / entry.file
        outputs = verify(path, model, data.x_test, entry.fixed_batch)
        if entry.exporter == "dynamo":
            verify_loads_elsewhere(path)
        record = manifest_record(entry, path, outputs, data.y_test)
        LOG.info("%s: test accuracy %.4f", entry.file, record["test_accuracy"])
        records.append(record)

    # 1-3: one trained MLP, three exports.
    torch.manual_seed(1)
    mlp = train(MLP(), data.x_train, data.y_train, seed=1, epochs=60, lr=3e-3, loss_fn=ce)
    export_torchscript(mlp, out_dir / "mlp.onnx", "logits")
    finish(
        Entry("mlp.onnx", "mlp", "torchscript", "logits", "logits", 10, count_params(mlp),
              description="Flatten-Linear(64,32)-Tanh-Linear(32,10)"),
        mlp,
    )
    initializers_to_constants(out_dir / "mlp.onnx", out_dir / "mlp_constants.onnx")
    finish(
        Entry("mlp_constants.onnx", "mlp", "onnx-postprocessed", "logits", "logits", 10,
              count_params(mlp),
              description="mlp.onnx with every initializer rewritten as a Constant node"),
        mlp,
    )
    mlp_softmax = WithSoftmax(mlp).eval()
    export_torchscript(mlp_softmax, out_dir / "mlp_softmax.onnx", "probabilities")
    finish(
        Entry("mlp_softmax.onnx", "mlp", "torchscript", "probabilities", "probabilities",
              10, count_params(mlp), description="mlp.onnx followed by Softmax(axis=1)"),
        mlp_softmax,
    )

    # 4: odd-vs-even, one sigmoid unit.
    torch.manual_seed(4)
    binary = train(MLP(hidden=32, out=1), data.x_train, data.y_train % 2, seed=4,
                   epochs=60, lr=3e-3, loss_fn=binary_loss)
    binary_sig = WithSigmoid(binary).eval()
    export_torchscript(binary_sig, out_dir / "binary_sigmoid.onnx", "probability")
    finish(
        Entry("binary_sigmoid.onnx", "mlp", "torchscript", "probability", "sigmoid", 2,
              count_params(binary), labels="odd",
              description="Flatten-Linear(64,32)-Tanh-Linear(32,1)-Sigmoid; "
                          "P(digit is odd), positive label = digit % 2"),
        binary_sig,
    )

    # 5: VGG-style chain; TrainingMode.PRESERVE on an eval() model skips the
    # exporter's eval-mode Conv+BN fusion, so BatchNormalization nodes survive.
    torch.manual_seed(5)
    vgg = train(VGGSmall(), data.x_train, data.y_train, seed=5, epochs=20, lr=3e-3, loss_fn=ce)
    export_torchscript(vgg, out_dir / "vgg_small.onnx", "logits", do_constant_folding=False,
                       training=torch.onnx.TrainingMode.PRESERVE)
    finish(
        Entry("vgg_small.onnx", "vgg", "torchscript", "logits", "logits", 10,
              count_params(vgg),
              description="[Conv3x3-BN-ReLU]x2-MaxPool-Conv3x3-BN-ReLU-MaxPool-Flatten-Linear; "
                          "BatchNormalization kept unfused"),
        vgg,
    )

    # 6: ResNet-style, dynamo exporter, fixed batch 1, external data.
    torch.manual_seed(6)
    resnet = train(ResNetSmall(), data.x_train, data.y_train, seed=6, epochs=15, lr=3e-3,
                   loss_fn=ce)
    export_dynamo_fixed_batch(resnet, out_dir / "resnet_small.onnx", "logits")
    finish(
        Entry("resnet_small.onnx", "resnet", "dynamo", "logits", "logits", 10,
              count_params(resnet), fixed_batch=1,
              description="stem Conv-BN-ReLU, BasicBlock(16->16), BasicBlock(16->32, stride 2, "
                          "1x1 projection), GlobalAveragePool, Linear; batch fixed to 1, "
                          "weights in resnet_small.onnx.data"),
        resnet,
    )

    # 7: DenseNet-style.
    torch.manual_seed(7)
    dense = train(DenseNetSmall(), data.x_train, data.y_train, seed=7, epochs=20, lr=3e-3,
                  loss_fn=ce)
    export_torchscript(dense, out_dir / "densenet_small.onnx", "logits")
    finish(
        Entry("densenet_small.onnx", "densenet", "torchscript", "logits", "logits", 10,
              count_params(dense),
              description="stem Conv, dense block of 3 x (BN-ReLU-Conv3x3, growth 4, Concat), "
                          "transition BN-ReLU-Conv1x1-AvgPool2, GlobalAveragePool, Linear"),
        dense,
    )

    # 8: ViT-style.
    torch.manual_seed(8)
    vit = train(ViTSmall(), data.x_train, data.y_train, seed=8, epochs=40, lr=2e-3, loss_fn=ce)
    export_torchscript(vit, out_dir / "vit_small.onnx", "logits")
    finish(
        Entry("vit_small.onnx", "transformer", "torchscript", "logits", "logits", 10,
              count_params(vit),
              description="2x2 patch Conv(1->32) -> 16 tokens + class token + position "
                          "embedding, 2 pre-norm blocks (LayerNorm, 2-head attention as "
                          "MatMul-Softmax-MatMul, GELU MLP), LayerNorm, Linear"),
        vit,
    )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    records = build(out_dir)
    manifest = {
        "dataset": "sklearn.datasets.load_digits (BSD-3-Clause)",
        "preprocessing": "images / 16.0 as float32 [N, 1, 8, 8]",
        "split": f"train_test_split(test_size={TEST_FRACTION}, random_state={SPLIT_SEED}, "
                 "stratify=y); test_accuracy is on the whole test split",
        "samples": {
            "inputs": "digits_test.npy",
            "labels": "digits_test_labels.npy",
            "npz": "digits_test.npz",
            "count": NUM_SAMPLES,
            "note": "the first 64 test-split images; sample_accuracy is on these",
        },
        "models": records,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for rec in records:
        path = out_dir / str(rec["file"])
        size = path.stat().st_size
        data = path.with_name(path.name + ".data")
        extra = f" + {data.stat().st_size} B data" if data.exists() else ""
        LOG.info("%-22s %7d B%s  %s", rec["file"], size, extra, op_histogram(path))


if __name__ == "__main__":
    main()
