"""One product J v and J^T u: the kept-forward halves against the combined gradient models, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/kept_forward.py [--corpus /work/corpus224]
        [--models resnet18_torchscript ...] [--repeats 5] [--products 4]

Why: a matrix-free estimator takes tens of products at one sample; the combined gradient
models (forward graph + rules' nodes) recompute the forward pass at every product, the split
ones (fimaudit/autodiff/kept_forward.py) run it once per sample. Per model: the milliseconds of
one vjp and one jvp product (one cotangent / tangent row) through each form, interleaved, the
fastest of ``--repeats`` rounds of ``--products`` products each (the kept form's forward half
runs once per round, as once per sample in an audit, and is included), their ratio, and the
largest relative difference between the two forms' results. Never run as a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fimaudit.audit import AuditConfig, intake, prepare_model  # noqa: E402
from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, OUTPUT_TANGENT, TANGENT, build_jvp_model, build_vjp_model  # noqa: E402
from fimaudit.gradients import graph as graph_gradients  # noqa: E402
from fimaudit.gradients import make_source  # noqa: E402
from fimaudit.graph.selection import LOGITS  # noqa: E402

MODELS = ("resnet18_torchscript", "vgg11_bn_torchscript", "densenet121_torchscript",
          "mobilenet_v3_small_torchscript", "vit_small_torchscript")


def _rounds(source, combined_vjp, combined_jvp, sample, cotangent, tangent, products: int, repeats: int):
    """Best-of milliseconds per product: (kept vjp, combined vjp, kept jvp, combined jvp) and results."""
    times = {key: [] for key in ("kept vjp", "combined vjp", "kept jvp", "combined jvp")}
    results = {}
    k = source.num_classes
    for _ in range(repeats):
        for key, run in (
            ("kept vjp", lambda: source.vjp(sample, cotangent)),
            ("combined vjp", lambda: source._one_sample_runs(combined_vjp, sample, cotangent, (k,))),
            ("kept jvp", lambda: source.jvp(sample, tangent)),
            ("combined jvp", lambda: source._one_sample_runs(combined_jvp, sample, tangent, source.sample_shape)),
        ):
            for session in (source._vjp, source._jvp):
                if isinstance(session, graph_gradients._KeptForwardSession):
                    session._rows = None  # a new round pays the forward half again, as a new sample would
            start = time.perf_counter()
            for _ in range(products):
                results[key] = run()
            times[key].append((time.perf_counter() - start) * 1000 / products)
    return {key: min(values) for key, values in times.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/work/corpus224")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--products", type=int, default=4)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    inputs = np.load(next(corpus.glob("inputs_*.npy")))[:1].astype(np.float32)
    print(f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.products} products per round, best of "
          f"{args.repeats} rounds, interleaved")
    print(f"{'model':32s} {'kept vjp':>9s} {'comb vjp':>9s} {'kept jvp':>9s} {'comb jvp':>9s} {'ratio':>6s} {'max rel diff':>12s}")
    for name in args.models:
        path = str(corpus / f"{name}.onnx")
        prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), inputs[:1])
        source = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
        forward = graph_gradients.with_sample_shape(source._forward_model or source.runner.model,
                                                    source.runner.input_name, source.sample_shape)
        jvp_model = build_jvp_model(forward, source.runner.input_name, LOGITS, source.probe)
        vjp_model = build_vjp_model(forward, source.runner.input_name, LOGITS, source.probe)
        combined_jvp = graph_gradients._GradientSession(jvp_model, source.runner, TANGENT, OUTPUT_TANGENT)
        combined_vjp = graph_gradients._GradientSession(vjp_model, source.runner, COTANGENT, INPUT_GRAD)
        del jvp_model, vjp_model
        rng = np.random.default_rng(0)
        cotangent = rng.standard_normal((1, source.num_classes))
        tangent = rng.standard_normal((1, source.input_size))
        best, results = _rounds(source, combined_vjp, combined_jvp, inputs[0], cotangent, tangent, args.products,
                                args.repeats)
        diff = max(
            float(np.abs(results[f"kept {m}"] - results[f"combined {m}"]).max() / np.abs(results[f"combined {m}"]).max())
            for m in ("vjp", "jvp")
        )
        ratio = (best["kept vjp"] + best["kept jvp"]) / (best["combined vjp"] + best["combined jvp"])
        print(f"{name:32s} {best['kept vjp']:9.1f} {best['combined vjp']:9.1f} {best['kept jvp']:9.1f} "
              f"{best['combined jvp']:9.1f} {ratio:6.2f} {diff:12.1e}", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}; ratio: (kept vjp + kept jvp) / (combined vjp + combined jvp), "
          "per-product ms")


if __name__ == "__main__":
    main()
