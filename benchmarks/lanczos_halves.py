"""Where one Lanczos sample's time goes: each ONNX Runtime run of fimaudit's job, by session.

Runs ``speed.auto_job`` (the audit's per-sample ``--method auto`` path) on three samples in turn,
three rounds after one warm round, and prints the time a sample and, per session (forward half,
VJP half, JVP half, fused Gram), the runs a sample and their median. ``--without`` undoes one
lever in this process, for A/B pairs in alternating processes (run the pair twice or more: the
layout of a process's buffers moves a half's time by several percent):

    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/lanczos_halves.py vgg11_bn_dynamo
    PYTHONPATH=/work/main /work/venvs/torch/bin/python benchmarks/lanczos_halves.py vgg11_bn_dynamo \\
        --without shared-forward

Levers: ``shared-forward`` (autodiff/shared_forward.py), ``masked-rows`` (autodiff/masked_rows.py,
both modes), ``vjp-for-products`` (the VJP model for products; the JVP still skips rows).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402

import fimaudit.autodiff.masked_rows as masked_rows  # noqa: E402
import fimaudit.gradients.graph as graph  # noqa: E402


def undo(lever: str) -> None:
    """Switch one lever off for this process."""
    if lever == "shared-forward":
        graph.share_forward = lambda *args, **kwargs: None  # type: ignore[assignment]
    elif lever == "masked-rows":
        masked_rows.MIN_WEIGHT_BYTES = 1 << 62
    elif lever == "vjp-for-products":
        graph.GraphJacobian._product_vjp = lambda self: None  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a corpus file name without .onnx, e.g. vgg11_bn_dynamo")
    parser.add_argument("--size", type=int, default=224, choices=[32, 224])
    parser.add_argument("--without", choices=["shared-forward", "masked-rows", "vjp-for-products"], default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.without:
        undo(args.without)
    speed.share_ort_pool()
    times: dict[Any, list[float]] = collections.defaultdict(list)
    names: dict[Any, str] = {}
    run = graph._run_gradient

    def timed(session: Any, outputs: list[str], feeds: dict, timeout: float | None) -> list:
        start = time.perf_counter()
        result = run(session, outputs, feeds, timeout)
        times[id(session)].append(time.perf_counter() - start)
        names.setdefault(id(session), f"{outputs[0]} ({len(outputs)} outputs)")
        return result

    graph._run_gradient = timed
    corpus = Path("/work/corpus224" if args.size == 224 else "/work/corpus")
    inputs = np.load(corpus / f"inputs_3x{args.size}x{args.size}.npy")[:3]
    source = speed.graph_source(corpus / f"{args.model}.onnx", inputs[:1], 2)
    speed.prime(source, 0.5 * inputs[0])
    job = speed.auto_job(source, inputs, [])
    for sample in inputs:  # warm: sessions built, the JVP split
        job(sample)
    times.clear()
    start = time.perf_counter()
    for _ in range(args.rounds):
        for sample in inputs:
            job(sample)
    count = args.rounds * len(inputs)
    print(f"{args.model} at 3x{args.size}x{args.size}, without {args.without or 'nothing'}: "
          f"{(time.perf_counter() - start) / count * 1e3:.1f} ms a sample")
    for key, values in times.items():
        print(f"  {names[key]:45s} {len(values) / count:5.1f} runs a sample, median {np.median(values) * 1e3:8.2f} ms, "
              f"{np.sum(values) / count * 1e3:8.1f} ms a sample")


if __name__ == "__main__":
    main()
