"""Milliseconds a row of one sample's kept J v and VJP halves at M rows a run: where batching rows stops paying.

Why: ``gradients/graph.RUN_ACTIVATION_BYTES`` caps the rows one run of a kept gradient half
carries by the model's largest activation. Rows batched into one run share its per-run costs
(small tensors: VGG-11 at 3x32x32 runs a J v row 3x faster at 40 rows a run than alone), and
cost once the tensors are large (3x224x224: page faults and cache). This script measures that
curve on a model of the corpus, so the cap can be checked against the numbers it rests on.

Each half runs on one kept sample (its forward half once), M random rows per run, the fastest
of ``--repeats`` runs, divided by M. The halves are reached through the graph source's private
members (``_kept_jvp``, ``_vjp``) because the public calls chunk the rows by the very cap
measured here.

    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/gradient_rows.py
        --model /work/corpus224/vgg11_bn_dynamo.onnx --rows 1,2,4,8,16 [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tools" / "corpus")]
from speed import graph_source, share_ort_pool  # noqa: E402

from fimaudit.graph.flops import largest_activation_bytes  # noqa: E402


def main() -> None:
    share_ort_pool()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an export of the corpus (3x32x32 or 3x224x224)")
    parser.add_argument("--rows", default="1,2,4,8,16", help="rows a run, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    counts = [int(count) for count in args.rows.split(",")]
    side = 224 if "224" in args.model.parent.name else 32
    sample = np.load(args.model.parent / f"inputs_3x{side}x{side}.npy")[:1]
    source = graph_source(args.model, sample, args.threads)
    print(f"{args.model.name}: largest activation {largest_activation_bytes(source.runner.model) / 2**20:.2f} MiB, "
          f"rows a run at most {source.speed_rows} (RUN_ACTIVATION_BYTES)")
    source.expect_products(sample[0])  # the JVP splits into kept halves, as before a Lanczos run
    rng = np.random.default_rng(0)
    halves = (("kept J v", source._kept_jvp(), sample.shape[1:]), ("VJP", source._vjp, (source.num_classes,)))
    for label, half, seed_shape in halves:
        if half is None:
            print(f"{label}: no kept half for this model")
            continue
        timings = []
        for count in counts:
            seeds = rng.standard_normal((count, 1, *seed_shape)).astype(np.float32)
            half.run(sample, seeds[:1])  # the forward half runs here, once
            best = np.inf
            for _ in range(args.repeats):
                started = time.perf_counter()
                half.run(sample, seeds)
                best = min(best, time.perf_counter() - started)
            timings.append(f"M={count}: {best / count * 1e3:.2f}")
        print(f"{label} ms a row: " + ", ".join(timings), flush=True)


if __name__ == "__main__":
    main()
