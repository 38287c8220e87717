"""Export torchvision classifiers with both PyTorch exporters: the real-model corpus.

Why: fimaudit's gradient graphs, architecture recognition and bounds must work on what real
exporters emit (folded and unfolded BatchNormalization, decomposed attention, Hardswish, SE
blocks, adaptive pooling), not only on the small hand-trained sample models. The files are too
large to commit, so they live outside the repository (default /work/corpus) and this script
rebuilds them deterministically.

Development-only: needs torch and torchvision (the venv at /work/venvs/torch), never the network.
Weights are random (torch.manual_seed(0) before each model). BatchNorm affine parameters are
then drawn away from their fresh values (gamma 1, beta 0) and the running statistics are measured
on N(0,1) inputs (a forward pass with only the BatchNorm layers in training mode), as a trained
network's would be. A fresh eval-mode BatchNorm is the identity, which would hide a wrong
BatchNorm gradient or bound, and without matched statistics the activations of a random
MobileNetV3 collapse until its logits vary by 2e-7 over inputs (a zero Jacobian, nothing to test).
Finally the last Linear layer is re-drawn with PyTorch's default initialisation (torchvision's
ViT starts its head at zero, which makes every Jacobian zero) and scaled so that the logits on
the sample inputs have standard deviation 2, about the margin of a trained classifier: fresh
heads give logits of 1e-2 (MobileNetV3), nearly uniform probabilities and a softmax covariance
close to I/K, which would test little of the Fisher mathematics.

    /work/venvs/torch/bin/python tools/corpus/export_torchvision.py [--out-dir /work/corpus] [--only resnet18]
    /work/venvs/torch/bin/python tools/corpus/export_torchvision.py --size 224 --classes 1000 --out-dir /work/corpus224

Writes ``<arch>_<exporter>.onnx`` for every architecture and exporter, ``resnet18_1000x224_torchscript.onnx``
(1000 classes, 3x224x224: the memory check of issue 3), ``inputs_3x32x32.npy`` (8 N(0,1) samples)
and ``manifest.json``. Every export is checked in ONNX Runtime against torch on the sample inputs.

``--size 224 --classes 1000`` builds the same architectures at ImageNet size (issue 12's second
table): the same recipe and seeds, ``inputs_3x224x224.npy`` (4 N(0,1) samples, ``--inputs``), no
separate memory model (the ResNet-18 there is one). An export that fails is recorded in the
manifest with its error (``"error"``) and the others go on; the script then exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from torch import nn

LOG = logging.getLogger("export_torchvision")

NUM_CLASSES = 10
IMAGE = (3, 32, 32)
TORCHSCRIPT_OPSET = 17
NUM_INPUTS = 8
INPUT_SEED = 1
INPUTS_FILE = "inputs_3x32x32.npy"


def vit_small(num_classes: int, side: int = 32) -> nn.Module:
    """torchvision's small VisionTransformer: 64 patches of 4x4 at 32x32, 16x16 patches above.

    At 224x224 the 16x16 patches of ViT-B/16 (196 tokens) keep the attention a realistic share of
    the work; 4x4 patches would give 3136 tokens and a 3136 x 3136 attention matrix per head.
    """
    return torchvision.models.VisionTransformer(
        image_size=side, patch_size=4 if side <= 32 else 16, num_layers=3, num_heads=4, hidden_dim=96,
        mlp_dim=192, num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One corpus architecture: how to build it and which opset the dynamo exporter uses.

    The dynamo opsets are spread over 18-20 so that the corpus covers the opset changes there
    (ReduceMean axes as an input from 18, Split num_outputs from 18, a native Gelu from 20).
    """

    name: str
    #: (number of classes, image side) -> a fresh module.
    build: Callable[[int, int], nn.Module]
    dynamo_opset: int
    #: Applied before the TorchScript export only, when that exporter refuses a module at this
    #: image side; returns whether it changed the module.
    torchscript_fix: Callable[[nn.Module, int], bool] | None = None


def replicate_instead_of_adaptive_pool(model: nn.Module, side: int) -> bool:
    """VGG's AdaptiveAvgPool2d((7, 7)) on a 1x1 map (32x32 input) is plain replication.

    The TorchScript exporter refuses adaptive pooling whose output size does not divide the
    input size; nearest Upsample to 7x7 computes the same function on 32x32 inputs (the export
    is checked against the unmodified torch model) and exports as Resize. At 224x224 the map is
    7x7 (7 divides it): the pooling exports as it is and nothing is changed. Other map sizes have
    no exact replacement here and are refused.
    """
    feature_map = side // 32  # VGG's five 2x2 max-pools
    if feature_map % 7 == 0:
        return False
    if feature_map != 1:
        raise ValueError(f"VGG at {side}x{side}: a {feature_map}x{feature_map} map has no exact export of "
                         "AdaptiveAvgPool2d((7, 7)) for the TorchScript exporter")
    model.avgpool = nn.Upsample(size=(7, 7), mode="nearest")
    return True


ARCHITECTURES = [
    Architecture("resnet18", lambda k, _side: torchvision.models.resnet18(num_classes=k), 18),
    Architecture("vgg11_bn", lambda k, _side: torchvision.models.vgg11_bn(num_classes=k), 18,
                 replicate_instead_of_adaptive_pool),
    Architecture("densenet121", lambda k, _side: torchvision.models.densenet121(num_classes=k), 19),
    Architecture("mobilenet_v3_small", lambda k, _side: torchvision.models.mobilenet_v3_small(num_classes=k), 20),
    Architecture("vit_small", vit_small, 20),
]


def calibrate_batchnorm(model: nn.Module, image: tuple[int, ...], generator: torch.Generator) -> None:
    """Random BatchNorm affine parameters, running statistics measured on N(0,1) inputs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=generator))
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batches
            norm.train()
        batch = 32 if image[-1] <= 64 else 4
        for _ in range(4):
            model(torch.randn((batch, *image), generator=generator))
        for norm in norms:
            norm.momentum = 0.1
            norm.eval()


LOGIT_STD = 2.0


def calibrate_head(model: nn.Module, inputs: np.ndarray, generator: torch.Generator) -> None:
    """Re-draw the last Linear layer and scale it to logit std LOGIT_STD (see module doc)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    bound = 1.0 / np.sqrt(head.in_features)
    with torch.no_grad():
        head.weight.copy_((2 * torch.rand(head.weight.shape, generator=generator) - 1) * bound)
        head.bias.copy_((2 * torch.rand(head.bias.shape, generator=generator) - 1) * bound)
        std = float(model(torch.from_numpy(inputs)).std())
        head.weight.mul_(LOGIT_STD / std)
        head.bias.mul_(LOGIT_STD / std)


def build_model(arch: Architecture, num_classes: int, inputs: np.ndarray) -> nn.Module:
    """The corpus model for ``inputs`` [N, 3, side, side]: the export's seeds, calibrated on them."""
    torch.manual_seed(0)
    model = arch.build(num_classes, int(inputs.shape[-1])).eval()
    calibrate_batchnorm(model, inputs.shape[1:], torch.Generator().manual_seed(0))
    calibrate_head(model, inputs, torch.Generator().manual_seed(1))
    return model


def export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path) -> int:
    """TorchScript exporter, opset 17, dynamic batch, constant folding on (BN folds into Conv)."""
    torch.onnx.export(
        model, (sample,), str(path), dynamo=False, opset_version=TORCHSCRIPT_OPSET,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return TORCHSCRIPT_OPSET


def export_dynamo(model: nn.Module, sample: torch.Tensor, path: Path, opset: int) -> int:
    """Dynamo exporter, batch fixed to 1, weights inside the file, stack traces dropped."""
    torch.onnx.export(
        model, (sample,), str(path), dynamo=True, external_data=False, opset_version=opset,
        input_names=["input"], output_names=["logits"],
    )
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(proto, str(path))
    return int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def check_against_torch(model: nn.Module, path: Path, inputs: np.ndarray, fixed_batch: bool) -> float:
    """Largest |ORT - torch| over the sample inputs, relative to the largest |logit|."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if fixed_batch:
        got = np.concatenate([session.run(None, {name: row[None]})[0] for row in inputs])
    else:
        got = session.run(None, {name: inputs})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(inputs)).numpy()
    return float(np.abs(got - want).max() / max(1e-12, np.abs(want).max()))


def op_histogram(path: Path) -> dict[str, int]:
    proto = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def export_one(
    arch: Architecture, exporter: str, out_dir: Path, inputs: np.ndarray,
    num_classes: int = NUM_CLASSES, image: tuple[int, int, int] = IMAGE, stem: str | None = None,
) -> dict:
    model = build_model(arch, num_classes, inputs)
    stem = stem or f"{arch.name}_{exporter}"
    path = out_dir / f"{stem}.onnx"
    sample = torch.from_numpy(inputs[:1])
    started = time.perf_counter()
    fixed = False
    if exporter == "torchscript":
        exported = build_model(arch, num_classes, inputs)
        if arch.torchscript_fix is not None:
            fixed = arch.torchscript_fix(exported, image[-1])
        opset = export_torchscript(exported, sample, path)
    else:
        opset = export_dynamo(model, sample, path, arch.dynamo_opset)
    seconds = time.perf_counter() - started
    onnx.checker.check_model(str(path))
    error = check_against_torch(model, path, inputs, fixed_batch=exporter == "dynamo")
    params = sum(p.numel() for p in model.parameters())
    LOG.info("%s: opset %d, %d params, %.1f MB, export %.1fs, rel err %.2e",
             path.name, opset, params, path.stat().st_size / 1e6, seconds, error)
    return {
        "file": path.name, "arch": arch.name, "exporter": exporter, "opset": opset,
        "params": int(params), "file_size": path.stat().st_size,
        "input_shape": [1 if exporter == "dynamo" else None, *image],
        "num_classes": num_classes, "batch": "fixed 1" if exporter == "dynamo" else "dynamic",
        "ort_vs_torch_rel_err": error, "export_seconds": round(seconds, 1),
        "ops": op_histogram(path),
        "note": (arch.torchscript_fix.__doc__ or "").splitlines()[0] if fixed and arch.torchscript_fix else "",
    }


def inputs_file(side: int) -> str:
    """The sample inputs' file name at this image side (``inputs_3x32x32.npy`` at 32)."""
    return f"inputs_{IMAGE[0]}x{side}x{side}.npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    parser.add_argument("--skip-memory-model", action="store_true", help="skip the 1000-class 224x224 ResNet-18")
    parser.add_argument("--size", type=int, default=IMAGE[-1], help="image side (default 32; 224: ImageNet size)")
    parser.add_argument("--classes", type=int, default=NUM_CLASSES, help="number of classes K (default 10)")
    parser.add_argument("--inputs", type=int, default=None,
                        help=f"N(0,1) sample inputs (default {NUM_INPUTS} at 32x32, 4 above 64x64)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    image = (IMAGE[0], args.size, args.size)
    count = args.inputs or (NUM_INPUTS if args.size <= 64 else 4)
    inputs = np.random.default_rng(INPUT_SEED).standard_normal((count, *image)).astype(np.float32)
    np.save(args.out_dir / inputs_file(args.size), inputs)
    manifest_path = args.out_dir / "manifest.json"
    previous = json.loads(manifest_path.read_text())["models"] if manifest_path.exists() else []
    entries = {entry["file"]: entry for entry in previous}
    described = {"file": inputs_file(args.size), "shape": list(inputs.shape), "distribution": "N(0,1)",
                 "seed": INPUT_SEED}
    failed = []
    for arch in ARCHITECTURES:
        if args.only and arch.name not in args.only:
            continue
        for exporter in ("torchscript", "dynamo"):
            try:
                entries_new = export_one(arch, exporter, args.out_dir, inputs, args.classes, image)
            except Exception as exc:  # one exporter failing on one model must not stop the corpus
                first_line = (str(exc).strip().splitlines() or [""])[0]
                LOG.error("%s_%s: export failed: %s", arch.name, exporter, exc)
                failed.append(f"{arch.name}_{exporter}")
                entries_new = {"file": f"{arch.name}_{exporter}.onnx", "arch": arch.name, "exporter": exporter,
                               "num_classes": args.classes, "input_shape": [None, *image],
                               "error": f"{type(exc).__name__}: {first_line}"}
            entries[entries_new["file"]] = entries_new
            write_manifest(manifest_path, entries, described)
    large_model = args.size == IMAGE[-1] and not args.skip_memory_model
    if large_model and (not args.only or "resnet18_1000x224" in args.only):
        large = np.random.default_rng(INPUT_SEED).standard_normal((2, 3, 224, 224)).astype(np.float32)
        entry = export_one(ARCHITECTURES[0], "torchscript", args.out_dir, large, num_classes=1000,
                           image=(3, 224, 224), stem="resnet18_1000x224_torchscript")
        entry["purpose"] = "memory check (K=1000, 3x224x224)"
        entries[entry["file"]] = entry
        write_manifest(manifest_path, entries, described)
    if failed:
        LOG.error("failed exports (recorded in %s): %s", manifest_path, ", ".join(failed))
        raise SystemExit(1)


def write_manifest(path: Path, entries: dict[str, dict], inputs: dict) -> None:
    document = {
        "generated_by": "tools/corpus/export_torchvision.py",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        "inputs": inputs,
        "models": sorted(entries.values(), key=lambda e: e["file"]),
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
