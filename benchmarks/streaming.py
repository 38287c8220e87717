"""Streaming and parallel audits: peak RSS against the number of samples, and --workers 2 against one process.

Run: .venv/bin/python benchmarks/streaming.py [--small 1000] [--large 10000] [--parallel 2000]

1. A linear classifier on 3 x 32 x 32 inputs (K = 10, exact lambda_max) audits N samples of a
   float32 .npy (12 KiB a sample: 117 MiB at N = 10,000) through the CLI, each run in its own
   process; its peak resident set (ru_maxrss from wait4) is printed for each N. The .npy is
   mapped read-only and its pages released batch by batch (fimaudit/data/streaming.py), so the
   peak should not grow with N beyond the per-sample results (a few hundred bytes each).
2. A heavier model (an MLP 3072-1024-1024-100: K = 100 gradient rows per sample) on N samples in
   one process and with --workers 2, wall-clock seconds of the whole CLI run side by side (the
   workers' start-up, about two imports of fimaudit and ONNX Runtime, included), with the
   machine's load (other work shares the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

SHAPE = (3, 32, 32)
CLASSES = 10


def model(path: Path) -> None:
    features = int(np.prod(SHAPE))
    weight = np.random.default_rng(0).normal(scale=0.05, size=(CLASSES, features)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W"], ["z"], transB=1),
        ],
        "linear_image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(weight, "W")],
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built.ir_version = 8
    path.write_bytes(built.SerializeToString())


def heavy_model(path: Path, hidden: int = 1024, classes: int = 100) -> None:
    """An MLP 3072 -> hidden -> hidden -> classes (ReLU): tens of milliseconds of exact lambda_max per sample."""
    rng = np.random.default_rng(2)
    features = int(np.prod(SHAPE))
    sizes = [features, hidden, hidden, classes]
    nodes = [helper.make_node("Flatten", ["x"], ["h0"], axis=1)]
    weights = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight = rng.normal(scale=1 / np.sqrt(fan_in), size=(fan_out, fan_in)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"W{layer}"))
        out = "z" if layer == len(sizes) - 2 else f"a{layer + 1}"
        nodes.append(helper.make_node("Gemm", [f"h{layer}", f"W{layer}"], [out], transB=1))
        if out != "z":
            nodes.append(helper.make_node("Relu", [out], [f"h{layer + 1}"]))
    graph = helper.make_graph(
        nodes,
        "mlp_image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", classes])],
        weights,
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built.ir_version = 8
    path.write_bytes(built.SerializeToString())


def data(path: Path, count: int) -> None:
    """``count`` samples written in blocks (the benchmark's own memory stays small)."""
    rng = np.random.default_rng(1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, *SHAPE))
    for start in range(0, count, 1000):
        stop = min(count, start + 1000)
        out[start:stop] = rng.standard_normal((stop - start, *SHAPE), dtype=np.float32)
    out.flush()
    del out


def audit(model_path: Path, data_path: Path, json_path: Path, *extra: str) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of one CLI audit in its own process."""
    args = [
        sys.executable,
        "-m",
        "fimaudit",
        "audit",
        str(model_path),
        "--data",
        str(data_path),
        "--method",
        "exact",
        "--no-bounds",
        "-q",
        "--json",
        str(json_path),
        *extra,
    ]
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"audit failed: {' '.join(args)}")
    return seconds, int(usage.ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model(root / "model.onnx")
        print(f"load before: {Path('/proc/loadavg').read_text().strip()}  (cores: {os.cpu_count()})")
        print(f"{'samples':>8} {'data MiB':>9} {'seconds':>8} {'peak RSS MiB':>13}")
        for count in (options.small, options.large):
            data(root / f"data{count}.npy", count)
            size = (root / f"data{count}.npy").stat().st_size / 2**20
            seconds, peak = audit(root / "model.onnx", root / f"data{count}.npy", root / f"a{count}.json")
            print(f"{count:>8} {size:>9.1f} {seconds:>8.1f} {peak / 1024:>13.1f}")
        count = options.parallel
        heavy_model(root / "heavy.onnx")
        data(root / "par.npy", count)
        one, _ = audit(root / "heavy.onnx", root / "par.npy", root / "one.json")
        two, _ = audit(root / "heavy.onnx", root / "par.npy", root / "two.json", "--workers", "2")
        first, second = (json.loads((root / name).read_text())["samples"] for name in ("one.json", "two.json"))
        same = [s["lambda_max"] for s in first] == [s["lambda_max"] for s in second]
        print(
            f"MLP 3072-1024-1024-100, {count} samples, exact: one process {one:.1f} s, --workers 2 {two:.1f} s, "
            f"speed-up {one / two:.2f}x (identical lambda_max: {same})"
        )
        print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
