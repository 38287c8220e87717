"""One product J v and J^T u at one sample, the gradient models split and unsplit, side by side.

    .venv/bin/python benchmarks/product_levers.py [--corpus /work/corpus224]
        [--models resnet18_torchscript ...] [--repeats 3] [--products 4]

Why: a matrix-free estimator (Lanczos at K = 1000) takes tens of products at one sample. Per
model, the milliseconds of one vjp and one jvp product (one cotangent / tangent row) through:
- ``now``: the gradient models split (fimaudit/autodiff/kept_forward.py: the forward half once
  per sample, included here once per round, as once per sample in an audit);
- ``combined``: the same rules, the gradient models unsplit (the forward re-run at every product).
Interleaved, the fastest of ``--repeats`` rounds of ``--products`` products each; the ratio of
each variant to ``now`` (vjp + jvp), and the largest relative difference of its results from
``now``'s. Never run as a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fimaudit.audit import AuditConfig, intake, prepare_model  # noqa: E402
from fimaudit.gradients import graph as graph_gradients  # noqa: E402
from fimaudit.gradients import make_source  # noqa: E402

MODELS = ("resnet18_torchscript", "vgg11_bn_torchscript", "densenet121_torchscript",
          "mobilenet_v3_small_torchscript", "vit_small_torchscript")
VARIANTS = ("now", "combined")


@contextlib.contextmanager
def undone(variant: str) -> Iterator[None]:
    """Undo one lever while a source's sessions are built (benchmark-only patching)."""
    saved_split = graph_gradients.split_gradient_model
    if variant == "combined":
        graph_gradients.split_gradient_model = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        graph_gradients.split_gradient_model = saved_split


def build(path: str, probe: np.ndarray, variant: str):
    """A graph source with ``variant``'s lever undone, both gradient models built."""
    with undone(variant):
        prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), probe)
        source = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
        for _ in range(graph_gradients.KEEP_FORWARD_AFTER + 1):  # the JVP's halves too, under the same lever
            source.jvp(probe[0], np.zeros((1, source.input_size)))
    return source


def forget(source) -> None:
    """A new round pays the forward half again, as a new sample would."""
    for session in (source._vjp, source._jvp_kept):
        if isinstance(session, graph_gradients._KeptForwardSession):
            session._rows = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/work/corpus224")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--products", type=int, default=4)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    inputs = np.load(next(corpus.glob("inputs_*.npy")))[:1].astype(np.float32)
    print(f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.products} products per round, best of "
          f"{args.repeats} rounds, interleaved; ms per product")
    print(f"{'model':32s} " + " ".join(f"{v + ' vjp':>13s} {v + ' jvp':>13s}" for v in VARIANTS)
          + " " + " ".join(f"{v + '/now':>12s}" for v in VARIANTS[1:]) + f" {'max rel diff':>12s}")
    for name in args.models:
        path = str(corpus / f"{name}.onnx")
        sources = {variant: build(path, inputs[:1], variant) for variant in VARIANTS}
        first = sources["now"]
        rng = np.random.default_rng(0)
        cotangent = rng.standard_normal((1, first.num_classes))
        tangent = rng.standard_normal((1, first.input_size))
        best: dict[str, float] = {}
        results: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for variant, source in sources.items():
                for mode, run in (("vjp", lambda s=source: s.vjp(inputs[0], cotangent)),
                                  ("jvp", lambda s=source: s.jvp(inputs[0], tangent))):
                    source._jvp_runs_on_rows = graph_gradients.KEEP_FORWARD_AFTER  # as deep in an estimator's run
                    forget(source)
                    start = time.perf_counter()
                    for _ in range(args.products):
                        results[f"{variant} {mode}"] = run()
                    spent = (time.perf_counter() - start) * 1000 / args.products
                    best[f"{variant} {mode}"] = min(best.get(f"{variant} {mode}", np.inf), spent)
        diff = max(float(np.abs(results[f"{v} {m}"] - results[f"now {m}"]).max() / np.abs(results[f"now {m}"]).max())
                   for v in VARIANTS[1:] for m in ("vjp", "jvp"))
        total = {v: best[f"{v} vjp"] + best[f"{v} jvp"] for v in VARIANTS}
        print(f"{name:32s} " + " ".join(f"{best[f'{v} vjp']:13.1f} {best[f'{v} jvp']:13.1f}" for v in VARIANTS)
              + " " + " ".join(f"{total[v] / total['now']:12.2f}" for v in VARIANTS[1:]) + f" {diff:12.1e}",
              flush=True)
        del sources
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
