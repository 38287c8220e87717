"""Where one Lanczos sample's wall time goes, session call by session call, against the FLOP floor.

Why: at 3x224x224 with K = 1000 a sample is the logits run, one forward half and about 45
gradient-half runs (22 Lanczos products of a VJP and a J v, and the VJP lifting the eigenvector
to input space). This script times every ONNX Runtime call of ``--samples`` primed samples (each
session built before; samples alternate, so none reuses the previous one's forward half) and
sets them beside the linear FLOPs of the model's forward pass (Conv, Gemm, MatMul, ...: a VJP or
J v of a linear layer costs the same) and this machine's float32 GEMM peak: the floor a sample
could reach if every run were only its linear layers at the peak. What lies between the two is
what a change to fimaudit could still win.

    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/sample_breakdown.py
        [--model /work/corpus224/vgg11_bn_dynamo.onnx] [--samples 6]
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tools" / "corpus")]
from speed import (  # noqa: E402
    auto_job,
    forward_flops,
    graph_source,
    load,
    model_arguments,
    peak_gflops,
    prime,
    session_calls_timed,
)

#: Call kinds in a sample's order.
KINDS = ("logits", "forward half", "gradient halves")


def main() -> None:
    args, inputs = model_arguments(__doc__, samples=6)
    print(f"load before: {load()}")
    peak = peak_gflops(args.threads)
    flops = forward_flops(args.model, tuple(int(d) for d in inputs.shape[1:]))
    source = graph_source(args.model, inputs[:1], args.threads)
    prime(source, 0.5 * inputs[0])
    record: list[dict] = []
    job = auto_job(source, inputs, record)
    job(inputs[0])
    job(inputs[1])  # every session made

    calls: dict[str, list[float]] = collections.defaultdict(list)
    real_logits = source.runner.run_batched

    def seen(forward_half: bool, seconds: float) -> None:
        calls["forward half" if forward_half else "gradient halves"].append(seconds)

    def timed_logits(rows: np.ndarray) -> list[np.ndarray]:
        started = time.perf_counter()
        result = real_logits(rows)
        calls["logits"].append(time.perf_counter() - started)
        return result

    source.runner.run_batched = timed_logits  # type: ignore[method-assign]
    print(f"{args.model.name}: linear work {flops / 1e9:.2f} GFLOP a pass; GEMM peak {peak:.0f} GFLOP/s "
          f"({flops / peak / 1e6:.1f} ms a pass at the peak)")
    print(f"{'sample':>6s} {'wall ms':>8s} " + " ".join(f"{kind + ' ms (runs)':>24s}" for kind in KINDS)
          + f" {'other ms':>9s} {'floor ms':>9s} {'wall/floor':>10s}")
    ratios = []
    for index in range(args.samples):
        calls.clear()
        started = time.perf_counter()
        with session_calls_timed(seen):
            job(inputs[2 + index % 2])
        wall = time.perf_counter() - started
        spent = sum(sum(times) for times in calls.values())
        runs = sum(len(calls[kind]) for kind in KINDS)
        floor = runs * flops / (peak * 1e9)
        ratios.append(wall / floor)
        cells = " ".join(f"{sum(calls[kind]) * 1e3:17.0f} ({len(calls[kind]):3d})" for kind in KINDS)
        other = (wall - spent) * 1e3
        print(f"{index:6d} {wall * 1e3:8.0f} {cells} {other:9.0f} {floor * 1e3:9.0f} {wall / floor:10.3f}", flush=True)
    halves = calls["gradient halves"]
    rate = flops / min(halves) / 1e9
    print(f"last sample's gradient-half runs: median {np.median(halves) * 1e3:.1f} ms, fastest {min(halves) * 1e3:.1f} "
          f"({rate:.0f} GFLOP/s of linear work, {100 * rate / peak:.0f}% of the peak); wall / floor over the samples: "
          f"median {np.median(ratios):.3f}, best {min(ratios):.3f}; {record[-1]['matvecs']} products")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
