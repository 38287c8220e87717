"""How tight are the local certificates? Median B(x, eps) / lambda_max(x) per model and radius.

    .venv/bin/python benchmarks/certify_tightness.py [--samples 8] [--corpus] [--corpus-samples 2]

For each model: the median over the samples of B(x, eps) / lambda_max(x) (lambda_max(x) exact,
from the graph Jacobian on ONNX Runtime as the audit computes it) at l2 radii eps = f * ||x||_2
for f in 0 (the point), 1e-9 (eps -> 0), 1e-4, 1e-3 and 1e-2; the median unstable activations at
1e-3; the certified radius (l2, relative to ||x||) for T = 10 x the model's median lambda_max;
and the seconds of one certificate at 1e-3 beside the seconds of the exact audit of that sample
(dense Jacobian + K x K eigenproblem). ``--corpus`` adds a second table for the torchvision-style
exports in /work/corpus (tools/corpus/export_torchvision.py) at ``--corpus-factors`` (a 3x32x32
certificate takes minutes; the radius is bisected only with ``--corpus-radius``). Never run as a
test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fimaudit.audit import AuditConfig, intake, prepare_model  # noqa: E402
from fimaudit.certify.certifier import Certifier  # noqa: E402
from fimaudit.certify.radius import certified_radius  # noqa: E402
from fimaudit.certify.registry import NotCertified  # noqa: E402
from fimaudit.fisher.exact import exact_lambda_max  # noqa: E402
from fimaudit.gradients import make_source  # noqa: E402
from fimaudit.graph.selection import LOGITS  # noqa: E402

FACTORS = (0.0, 1e-9, 1e-4, 1e-3, 1e-2)
SAMPLE_MODELS = ("mlp", "vgg_small", "resnet_small", "densenet_small")
CORPUS = ("resnet18_torchscript", "densenet121_torchscript", "vgg11_bn_torchscript")


def measure(path: Path, inputs: np.ndarray, factors: tuple[float, ...], timed: float = 1e-3,
            radius: bool = True) -> dict[str, object]:
    prepared = prepare_model(intake(str(path)), AuditConfig(model_path=str(path)), inputs[:1])
    source = make_source("graph", prepared.runner, inputs.shape[1:], prepared.num_classes).source
    certifier = Certifier(prepared.logits_model, prepared.selection.input_name, LOGITS, tuple(inputs.shape[1:]))
    ratios: dict[float, list[float]] = {f: [] for f in factors}
    exact, audit_seconds, cert_seconds, unstable = [], [], [], []
    for sample in inputs:
        started = time.perf_counter()
        batch = sample[None].astype(np.float32)
        value = exact_lambda_max(source.dense(batch)[0], source.logits(batch)[0], with_eigenvector=False).value
        audit_seconds.append(time.perf_counter() - started)
        exact.append(value)
        scale = float(np.linalg.norm(sample))
        for f in factors:
            local = certifier.bound(sample.astype(np.float64), f * scale)
            ratios[f].append(local.value / value)
            if f == timed:
                cert_seconds.append(local.seconds)
                unstable.append(local.unstable)
    threshold = 10.0 * float(np.median(exact))
    radii = [certified_radius(certifier, s.astype(np.float64), threshold).epsilon / float(np.linalg.norm(s))
             for s in inputs] if radius else [float("nan")]
    return {
        "ratios": {f: float(np.median(r)) for f, r in ratios.items()},
        "lambda": float(np.median(exact)), "radius": float(np.median(radii)),
        "unstable": float(np.median(unstable)) if unstable else float("nan"),
        "cert_s": float(np.median(cert_seconds)) if cert_seconds else float("nan"),
        "audit_s": float(np.median(audit_seconds)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--corpus", action="store_true")
    parser.add_argument("--corpus-samples", type=int, default=2)
    parser.add_argument("--corpus-factors", default="0,1e-9,1e-6,1e-5,1e-4",
                        help="radii (times ||x||) for the corpus: a 3x32x32 certificate takes minutes")
    parser.add_argument("--corpus-models", nargs="*", default=list(CORPUS),
                        help="which corpus exports (a VGG-11 or DenseNet-121 certificate takes minutes)")
    parser.add_argument("--corpus-radius", action="store_true",
                        help="also bisect the certified radius on the corpus (~20 certificates per sample)")
    args = parser.parse_args()
    digits = np.load(ROOT / "sample_models" / "digits_test.npy")[: args.samples]
    runs = [(ROOT / "sample_models" / f"{name}.onnx", digits) for name in SAMPLE_MODELS]
    corpus_runs: list[tuple[Path, np.ndarray]] = []
    if args.corpus:
        corpus = Path("/work/corpus")
        inputs = np.load(corpus / "inputs_3x32x32.npy")[: args.corpus_samples]
        corpus_runs = [(corpus / f"{name}.onnx", inputs) for name in args.corpus_models]
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    table(runs, FACTORS, 1e-3, True)
    if corpus_runs:
        factors = tuple(float(f) for f in args.corpus_factors.split(","))
        print()
        table(corpus_runs, factors, max(factors), args.corpus_radius)


def table(runs: list[tuple[Path, np.ndarray]], factors: tuple[float, ...], timed: float, radius: bool) -> None:
    """One markdown table: a row per model, B/lambda per radius, the unstable count and seconds at ``timed``."""
    columns = " | ".join(f"eps={f:g}|x|" for f in factors)
    print(f"| model | n | median lambda_max | {columns} | unstable @{timed:g} | radius/|x| @T=10x | "
          f"s cert @{timed:g} | s exact audit |")
    print("|" + "---|" * (len(factors) + 7))
    for path, inputs in runs:
        try:
            row = measure(path, inputs, factors, timed, radius)
        except NotCertified as exc:
            print(f"| {path.stem} | {len(inputs)} | {exc} |", flush=True)
            continue
        ratios = " | ".join(f"{row['ratios'][f]:.3g}" for f in factors)  # type: ignore[index]
        print(f"| {path.stem} | {len(inputs)} | {row['lambda']:.4g} | {ratios} | {row['unstable']:g} | "
              f"{row['radius']:.2e} | {row['cert_s']:.3f} | {row['audit_s']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
