"""Strength of fimaudit's minimum-norm attack against a strong reference attack in PyTorch, on the same networks.

For each sample model and norm, the median over samples of fimaudit's verified epsilon_min (DeepFool +
bisection, ``fimaudit audit --attack``, no framework) beside the median of a reference attack's, and
their ratio; the issue's target is fimaudit within 10% of the reference (ratio <= 1.10).

The reference is a careful PGD bisection written in torch, on the ONNX file converted by onnx2torch
(a final Softmax or Sigmoid cut, as fimaudit cuts it; the class probabilities checked against ONNX
Runtime's on every sample before it is attacked): per sample, eps doubles from
0.01 until PGD succeeds, then ``--bisections`` halvings of the bracket; each PGD call is one
untargeted run plus one targeted run per other class (multi-targeted PGD), ``--steps`` steps of
normalised (l2) or sign (l-inf) ascent on the margin with a cosine step decay from eps / 4, each
iterate clipped to [0, 1] and projected into the ball. Its epsilon_min is the smallest norm of an
example that ONNX Runtime confirms (the same check fimaudit's rest on). Lower is stronger.

Run from the repository root (the fimaudit side runs in .venv, the reference in the torch venv by a
subprocess of this file)::

    .venv/bin/python benchmarks/attack_strength.py [--samples 32] [--torch-python /work/venvs/torch/bin/python]
    .venv/bin/python benchmarks/attack_strength.py --models "" --corpus /work/corpus --norms 2 --samples 4

The corpus (tools/corpus/export_torchvision.py: random weights, N(0, 1) inputs) has no natural
input range, so nothing is clipped there; its mobilenet_v3_small does not convert with onnx2torch.

Development only: torch and onnx2torch are never needed by the package or its tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
MODELS = ["mlp", "mlp_softmax", "binary_sigmoid", "vgg_small", "resnet_small", "densenet_small", "vit_small"]
NORMS = ["2", "inf"]
#: The torchvision-style corpus (tools/corpus/export_torchvision.py): random weights, N(0, 1) inputs.
CORPUS_MODELS = ["resnet18", "mobilenet_v3_small", "vit_small", "vgg11_bn", "densenet121"]


@dataclass(frozen=True)
class Target:
    """One network to attack: its ONNX file, data, output kind and valid input range (None: unbounded)."""

    name: str
    path: str
    data: str
    kind: str
    input_range: tuple[float, float] | None

    def to_json(self) -> str:
        """The target as one argument of the reference subprocess."""
        return json.dumps(dataclasses.asdict(self))


def sample_targets(names: list[str]) -> list[Target]:
    """The sample models on the bundled digits, pixel values in [0, 1]."""
    manifest = {m["file"]: m for m in json.loads((SAMPLES / "manifest.json").read_text())["models"]}
    return [Target(name, str(SAMPLES / f"{name}.onnx"), str(SAMPLES / "digits_test.npy"),
                   manifest[f"{name}.onnx"]["output"]["kind"], (0.0, 1.0)) for name in names]


def corpus_targets(folder: Path, names: list[str]) -> list[Target]:
    """The corpus' TorchScript exports on its N(0, 1) inputs (no natural range: nothing clipped)."""
    return [Target(name, str(folder / f"{name}_torchscript.onnx"), str(folder / "inputs_3x32x32.npy"), "logits", None)
            for name in names if (folder / f"{name}_torchscript.onnx").exists()]


# ---------------------------------------------------------------------------------------------
# The reference, in the torch venv


def _torch_model(path: Path):  # runs in the torch venv
    """The ONNX file as a torch module: opset lowered to 17 and fixed-batch reshapes relaxed for onnx2torch."""
    import onnx
    from onnx import numpy_helper, version_converter
    from onnx2torch import convert

    model = onnx.load(str(path))
    if max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) > 17:
        model = version_converter.convert_version(model, 17)
    for node in list(model.graph.node):  # score the class logits, as fimaudit does: cut a final Softmax/Sigmoid
        if node.op_type in ("Softmax", "Sigmoid") and node.output[0] == model.graph.output[0].name:
            model.graph.output[0].name = node.input[0]
            model.graph.node.remove(node)
    constants = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape":
            for attribute in node.attribute:
                if attribute.name == "allowzero":
                    attribute.i = 0
            shape = constants.get(node.input[1])
            if shape is not None:
                values = numpy_helper.to_array(shape).copy()
                if values.size and values[0] == 1 and 0 not in values:
                    values[0] = -1  # the exporter's fixed batch of 1
                    shape.CopyFrom(numpy_helper.from_array(values, shape.name))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.dim_param = "N"
    return convert(model).eval()


def _as_logits(outputs, kind: str):  # runs in the torch venv
    """Class logits from the cut network's scores: as they are, or [0, s] for a sigmoid's score s."""
    import torch

    if kind == "sigmoid":
        score = outputs.reshape(-1, 1)
        return torch.cat([torch.zeros_like(score), score], dim=1)
    return outputs.reshape(outputs.shape[0], -1)


def _probabilities(outputs: np.ndarray, kind: str) -> np.ndarray:
    """Class probabilities from the ONNX file's own output (logits, probabilities or one sigmoid q)."""
    if kind == "probabilities":
        return outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    if kind == "sigmoid":
        q = outputs.reshape(-1, 1).astype(np.float64)
        return np.concatenate([1 - q, q], axis=1)
    z = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference(target: Target, norm: str, samples: int, steps: int, bisections: int, seed: int) -> dict:
    """Per-sample reference epsilon_min (None where no verified example was found)."""
    import onnxruntime as ort
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    kind, path, limits = target.kind, Path(target.path), target.input_range
    net = _torch_model(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    def ort_classes(rows: np.ndarray) -> np.ndarray:
        out = np.concatenate([session.run(None, {feed: row[None].astype(np.float32)})[0] for row in rows])
        return _probabilities(out, kind).argmax(1)

    data = np.load(target.data)[:samples].astype(np.float32)
    x = torch.from_numpy(data)
    with torch.no_grad():
        logits = _as_logits(net(x), kind)
    onnx_out = np.concatenate([session.run(None, {feed: row[None]})[0] for row in data])
    mismatch = float(np.abs(_probabilities(onnx_out, kind) - torch.softmax(logits.double(), 1).numpy()).max())
    if mismatch > 1e-4:
        raise SystemExit(f"{target.name}: torch conversion differs from ONNX Runtime by {mismatch}")
    original = logits.argmax(1)
    classes = logits.shape[1]
    n = x.shape[0]
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731

    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if limits is not None:
            delta = torch.clamp(x + delta, limits[0], limits[1]) - x
        if norm == "inf":
            return torch.maximum(torch.minimum(delta, eps.view(-1, 1, 1, 1)), -eps.view(-1, 1, 1, 1))
        length = flat(delta).norm(dim=1).clamp_min(1e-30)
        return delta * torch.clamp(eps / length, max=1.0).view(-1, 1, 1, 1)

    def pgd(eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Applied norms of verified examples within eps (inf where none) and the examples."""
        best = torch.full((n,), float("inf"))
        found = x.clone()
        targets = [None, *range(classes)]
        for target in targets:
            start = 1e-3 * eps.view(-1, 1, 1, 1) * torch.randn_like(x)
            delta = torch.zeros_like(x) if target is None else project(start, eps)
            for step in range(steps):
                size = eps / 400 + (eps / 4 - eps / 400) * 0.5 * (1 + np.cos(np.pi * step / max(steps - 1, 1)))
                delta.requires_grad_(True)
                z = _as_logits(net(x + delta), kind)
                own = z.gather(1, original.view(-1, 1)).squeeze(1)
                if target is None:
                    rival = z.masked_fill(torch.nn.functional.one_hot(original, classes).bool(), -1e9).max(1).values
                else:
                    rival = z[:, target]
                margin = rival - own
                (grad,) = torch.autograd.grad(margin.sum(), delta)
                with torch.no_grad():
                    hit = z.argmax(1) != original
                    norms = flat(delta).norm(dim=1) if norm == "2" else flat(delta).abs().max(1).values
                    better = hit & (norms < best)
                    best = torch.where(better, norms, best)
                    found[better] = (x + delta)[better]
                    if norm == "inf":
                        direction = grad.sign()
                    else:
                        direction = grad / flat(grad).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
                    if target is not None:
                        direction[original == target] = 0
                    delta = project(delta + size.view(-1, 1, 1, 1) * direction, eps)
        return best, found

    eps = torch.full((n,), 0.01)
    smallest = torch.full((n,), float("inf"))
    examples = x.clone()

    def keep_verified(best: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        nonlocal smallest, examples
        candidates = torch.isfinite(best)
        if candidates.any():
            rows = found[candidates].detach().numpy()
            ok = torch.from_numpy(ort_classes(rows) != original[candidates].numpy())
            idx = torch.nonzero(candidates).squeeze(1)[ok]
            applied = found[idx] - x[idx]
            norms = flat(applied).norm(dim=1) if norm == "2" else flat(applied).abs().max(1).values
            better = norms < smallest[idx]
            smallest[idx[better]] = norms[better]
            examples[idx[better]] = found[idx[better]]
        return smallest <= eps + 1e-12

    high = torch.full((n,), float("inf"))
    for _ in range(12):  # doubling: the first radius where PGD succeeds
        open_rows = ~torch.isfinite(high)
        if not open_rows.any():
            break
        success = keep_verified(*pgd(eps))
        high = torch.where(open_rows & success, eps, high)
        eps = torch.where(torch.isfinite(high), eps, eps * 2)
    low = torch.where(torch.isfinite(high), high / 2, high)
    low[torch.isclose(high, torch.full_like(high, 0.01))] = 0.0
    for _ in range(bisections):
        mid = torch.where(torch.isfinite(high), (low + high) / 2, torch.full_like(high, 1.0))
        eps = mid
        success = keep_verified(*pgd(mid))
        high = torch.where(success, torch.minimum(high, smallest), high)
        low = torch.where(success, low, mid)
    return {"eps": [float(v) if np.isfinite(v) else None for v in smallest.numpy()]}


# ---------------------------------------------------------------------------------------------
# fimaudit's side, and the table


def fimaudit_eps(target: Target, norm: str, samples: int) -> tuple[list[float | None], float]:
    """The verified epsilon_min fimaudit finds per sample (``audit --attack [--input-range]``), and the seconds."""
    sys.path.insert(0, str(ROOT))
    from fimaudit.attacks import InputRange
    from fimaudit.attacks.stage import AttackConfig
    from fimaudit.audit import AuditConfig, run_audit

    limits = None if target.input_range is None else InputRange(*target.input_range)
    config = AuditConfig(
        model_path=target.path, data_path=target.data, samples=samples, bounds=False,
        attack=AttackConfig(norm=norm, input_range=limits),  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    result = run_audit(config)
    return [s.attack.epsilon_min if s.attack else None for s in result.samples], time.perf_counter() - started


def median(values: list[float | None]) -> float:
    """Median over samples, a missing example counted as infinitely far (it can only raise the median)."""
    return float(np.median([np.inf if v is None else v for v in values]))


def main() -> None:
    """Print the table: per model and norm, both medians and their ratio, the worst per-sample ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--bisections", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS), help="sample models (empty: none)")
    parser.add_argument("--corpus", type=Path, help="the torchvision-style corpus folder (e.g. /work/corpus)")
    parser.add_argument("--corpus-models", default=",".join(CORPUS_MODELS))
    parser.add_argument("--norms", default=",".join(NORMS))
    parser.add_argument("--torch-python", default="/work/venvs/torch/bin/python")
    parser.add_argument("--reference-cache", type=Path,
                        help="keep each reference result here and reuse it (the reference depends only on the "
                        "network, data and its own settings)")
    parser.add_argument("--reference", nargs=2, metavar=("TARGET_JSON", "NORM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        target = Target(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.reference[0]).items()})
        print(json.dumps(reference(target, args.reference[1], args.samples, args.steps, args.bisections, args.seed)))
        return
    targets = sample_targets([m for m in args.models.split(",") if m])
    if args.corpus:
        targets += corpus_targets(args.corpus, args.corpus_models.split(","))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load: {load} (1, 5, 15 min) on {os.cpu_count()} CPUs")
    print(f"up to {args.samples} samples per model; reference: torch multi-targeted PGD bisection, "
          f"{args.steps} steps x (1 + K) runs, {args.bisections} bisections; ratio = fimaudit / reference")
    print(f"{'model':20} {'norm':4} {'range':6} {'fimaudit':>10} {'reference':>10} {'ratio':>6} {'worst':>6} "
          f"{'found f/r':>9} {'fimaudit s':>10} {'ref s':>7}")
    for target in targets:
        span = "none" if target.input_range is None else "[0,1]"
        for norm in args.norms.split(","):
            ours, ours_seconds = fimaudit_eps(target, norm, args.samples)
            started = time.perf_counter()
            key = f"{target.name}_l{norm}_{args.samples}_{args.steps}_{args.bisections}_{args.seed}.json"
            cached = args.reference_cache / key if args.reference_cache else None
            if cached is not None and cached.exists():  # the reference does not change with fimaudit
                theirs, ref_seconds = json.loads(cached.read_text()), float("nan")
            else:
                run = subprocess.run(
                    [args.torch_python, __file__, "--reference", target.to_json(), norm, "--samples",
                     str(args.samples), "--steps", str(args.steps), "--bisections", str(args.bisections),
                     "--seed", str(args.seed)],
                    capture_output=True, text=True, cwd=ROOT,
                )
                if run.returncode != 0:
                    print(f"{target.name:20} l{norm:3} reference failed: {run.stderr.strip().splitlines()[-1]}")
                    continue
                theirs = json.loads(run.stdout.strip().splitlines()[-1])["eps"]
                ref_seconds = time.perf_counter() - started
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_text(json.dumps(theirs))
            ratios = [a / b for a, b in zip(ours, theirs, strict=True) if a is not None and b]
            found = f"{sum(v is not None for v in ours)}/{sum(v is not None for v in theirs)}"
            print(f"{target.name:20} l{norm:3} {span:6} {median(ours):10.4g} {median(theirs):10.4g} "
                  f"{median(ours) / median(theirs):6.3f} {max(ratios):6.3f} {found:>9} {ours_seconds:10.1f} "
                  f"{ref_seconds:7.1f}", flush=True)


if __name__ == "__main__":
    main()
