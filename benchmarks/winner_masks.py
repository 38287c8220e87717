"""A tiling MaxPool's winner mask two ways, on a whole model in one process: a forward half and a sample.

Why: the forward half of a sample's gradient models computes, for every max pool whose windows
tile its input, a 0/1 mask of each window's winner (``autodiff/rules/pooling``). Square 2-D
float windows now make it with SpaceToDepth, ArgMax and DepthToSpace
(``_winner_mask_by_blocks``); before, with a strided Slice per tap, a Concat, ArgMax and a 6-D
Transpose, which every other pool still uses. This script builds the model's graph source both
ways in one process (the new form switched off by patching ``pooling._square_blocks`` while the
first source builds) and alternates one Lanczos sample at a time between them for
``--seconds`` (this host's speed moves in periods of seconds: see paired_ratio.py), timing each
sample and, inside it, each session call: the forward half (the one call with many outputs) and
the gradient halves. lambda_max must come out the same (the masks are the same numbers).

    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/winner_masks.py
        [--model /work/corpus224/vgg11_bn_dynamo.onnx] [--seconds 300]
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tools" / "corpus")]
from speed import auto_job, graph_source, model_arguments, prime, session_calls_timed  # noqa: E402

import fimaudit.autodiff.rules.pooling as pooling  # noqa: E402


def build_jobs(model: Path, inputs: np.ndarray, threads: int) -> dict[str, Callable[[np.ndarray], float]]:
    """Each form's per-sample job, its sessions all built (two samples run; not timed)."""
    real = pooling._square_blocks
    jobs = {}
    for label, blocks in (("transpose", False), ("blocks", True)):
        pooling._square_blocks = real if blocks else (lambda *args: False)
        try:
            source = graph_source(model, inputs[:1], threads)
            prime(source, 0.5 * inputs[0])
            jobs[label] = auto_job(source, inputs, [])
            jobs[label](inputs[0])
            jobs[label](inputs[1])  # the product VJP and the shared forward half are made on the first sample
        finally:
            pooling._square_blocks = real
    return jobs


def main() -> None:
    args, inputs = model_arguments(__doc__, seconds=300.0)
    jobs = build_jobs(args.model, inputs, args.threads)

    calls: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    running = ["transpose"]

    def seen(forward_half: bool, seconds: float) -> None:
        calls[(running[0], "forward half" if forward_half else "gradient half")].append(seconds)

    walls: dict[str, list[float]] = collections.defaultdict(list)
    values: dict[str, list[float]] = collections.defaultdict(list)
    ends, pairs = time.time() + args.seconds, 0
    with session_calls_timed(seen):
        while time.time() < ends:
            sample = inputs[2 + pairs % 2]  # never the same sample twice in a row on one side
            for label in ("transpose", "blocks") if pairs % 2 == 0 else ("blocks", "transpose"):
                running[0] = label
                started = time.perf_counter()
                values[label].append(jobs[label](sample))
                walls[label].append(time.perf_counter() - started)
            pairs += 1

    ratios = np.array(walls["blocks"]) / np.array(walls["transpose"])
    print(f"{args.model.name}: {pairs} pairs in {args.seconds:.0f} s; per-pair ratio blocks / transpose: median "
          f"{np.median(ratios):.4f}, quartiles {np.percentile(ratios, 25):.4f}-{np.percentile(ratios, 75):.4f}")
    for label in ("transpose", "blocks"):
        median, fastest = np.median(walls[label]) * 1e3, min(walls[label]) * 1e3
        line = [f"  {label:9s} sample median {median:7.1f} ms (fastest {fastest:7.1f})"]
        for kind in ("forward half", "gradient half"):
            seen = calls[(label, kind)]
            line.append(f"{kind} median {np.median(seen) * 1e3:6.1f} (fastest {min(seen) * 1e3:6.1f})")
        print("; ".join(line))
    worst = max(abs(a - b) / abs(a) for a, b in zip(values["transpose"], values["blocks"], strict=True))
    print(f"  lambda_max largest relative difference: {worst:.1e}")


if __name__ == "__main__":
    main()
