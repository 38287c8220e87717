"""Sample groups (fimaudit/sample_groups.py) against one sample at a time, side by side in one run.

For each model: ``fimaudit audit MODEL --data X --samples 16 --no-bounds`` run in this process
(the CLI's own entry point), alternately with the audit's sample groups (B as the audit chooses
it) and with B = 1 (``sample_groups.MAX_GROUP`` set to 1 for that run), ``--repeats`` times
interleaved so that a change in the machine's load hits both alike. Printed per model: the
per-sample stage's milliseconds a sample (``audit_samples``, timed around its call: estimator
and Jacobians, no bounds, no gradient check) and the whole audit's seconds, best and median of
the repeats, the ratio of the medians, and the largest relative difference between the two
runs' lambda_max values. The load average is printed before and after: on a shared machine
it says how far to trust the numbers.

The 8 samples of /work/corpus/inputs_3x32x32.npy are repeated to 16 (samples 8..15 are copies of
0..7: the same per-sample work).

    .venv/bin/python benchmarks/sample_groups.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

import fimaudit.audit
import fimaudit.sample_loop
from fimaudit import sample_groups
from fimaudit.cli import main

CORPUS = Path("/work/corpus")
MODELS = ("resnet18_torchscript", "vgg11_bn_torchscript", "mobilenet_v3_small_torchscript")


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine has 2 cores)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def recorded(function: Callable[..., Any], seconds: list[float], values: list[Any]) -> Callable[..., Any]:
    """``function`` with its seconds appended to ``seconds`` and its return value to ``values``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        value = function(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        values.append(value)
        return value

    return wrapper


def audit_once(
    model: Path, data: Path, samples: int, width: int | None, out: Path
) -> tuple[float, float, list[float], int]:
    """(per-sample stage seconds, whole audit seconds, lambda_max values, B) of one CLI audit."""
    stage: list[float] = []
    widths: list[int] = []
    original_stage, original_width = fimaudit.audit.audit_samples, sample_groups.MAX_GROUP
    original_choice = fimaudit.sample_loop.group_width
    fimaudit.audit.audit_samples = recorded(original_stage, stage, [])  # type: ignore[assignment]
    fimaudit.sample_loop.group_width = recorded(original_choice, [], widths)  # type: ignore[assignment]
    if width is not None:
        sample_groups.MAX_GROUP = width
    try:
        start = time.perf_counter()
        result = CliRunner().invoke(
            main,
            ["audit", str(model), "--data", str(data), "--samples", str(samples), "--no-bounds", "-q",
             "--json", str(out)],
        )
        whole = time.perf_counter() - start
    finally:
        fimaudit.audit.audit_samples = original_stage  # type: ignore[assignment]
        fimaudit.sample_loop.group_width = original_choice  # type: ignore[assignment]
        sample_groups.MAX_GROUP = original_width
    if result.exit_code not in (0, 1):
        raise RuntimeError(f"audit of {model.name} failed ({result.exit_code}): {result.output}")
    document = json.loads(out.read_text())
    values = [float(sample["lambda_max"]) for sample in document["samples"]]
    return stage[0], whole, values, widths[0] if widths else 1


def cell(series: list[float], digits: int = 0) -> str:
    """best/median of ``series``."""
    return f"{min(series):.{digits}f}/{statistics.median(series):.{digits}f}"


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    inputs = np.load(CORPUS / "inputs_3x32x32.npy")
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "inputs.npy"
        np.save(data, np.concatenate([inputs] * -(-args.samples // inputs.shape[0]))[: args.samples])
        print(f"load average before: {load()}")
        print(f"{'model':<32} {'B':>2} {'ms/sample grouped':>18} {'ms/sample B=1':>14} {'ratio':>6} "
              f"{'audit s grouped':>16} {'audit s B=1':>12} {'max rel diff':>12}")
        for name in args.models:
            model = CORPUS / f"{name}.onnx"
            audit_once(model, data, 2, None, Path(folder) / "warm.json")  # derivation caches, page cache
            timings: dict[str, list[tuple[float, float]]] = {"grouped": [], "single": []}
            values: dict[str, list[float]] = {}
            chosen: dict[str, int] = {}
            for _ in range(args.repeats):
                for label, width in (("grouped", None), ("single", 1)):
                    out = Path(folder) / f"{label}.json"
                    stage, whole, values[label], chosen[label] = audit_once(model, data, args.samples, width, out)
                    timings[label].append((stage, whole))
            per_sample = {k: [1000 * s / args.samples for s, _ in v] for k, v in timings.items()}
            wall = {k: [w for _, w in v] for k, v in timings.items()}
            difference = max(
                abs(a - b) / max(abs(b), 1e-300) for a, b in zip(values["grouped"], values["single"], strict=True)
            )

            ratio = statistics.median(per_sample["grouped"]) / statistics.median(per_sample["single"])
            print(f"{name:<32} {chosen['grouped']:>2} {cell(per_sample['grouped']):>18} "
                  f"{cell(per_sample['single']):>14} {ratio:>6.2f} {cell(wall['grouped'], 1):>16} "
                  f"{cell(wall['single'], 1):>12} {difference:>12.1e}")
        print("cells: best/median of the repeats; ratio: medians, grouped / B=1")
        print(f"load average after: {load()}")


if __name__ == "__main__":
    main_benchmark()
