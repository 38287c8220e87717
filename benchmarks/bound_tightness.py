"""How tight are the certified bounds? Bound / exact lambda_max on every sample model.

    /work/venv/bin/python benchmarks/bound_tightness.py [--samples 64] [--float64 8]

For each sample model: the recognised family, the global bound, the largest measured exact
lambda_max, their ratio, and the per-sample bound / exact lambda_max (min, median, max) over
the samples. ``--float64 N`` also checks the first N samples against an independent float64
lambda_max (tests/bounds/reference64.py) and counts violations (there must be none).
Never run as a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fimaudit.audit import AuditConfig, run_audit  # noqa: E402
from fimaudit.graph.selection import LOGITS  # noqa: E402
from tests.conftest import SAMPLES, sample_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--float64", type=int, default=0, help="samples also checked against float64 lambda_max")
    args = parser.parse_args()
    header = f"{'model':22s} {'family':12s} {'global bound':>12s} {'max exact':>10s} {'global/max':>10s} {'per-sample bound / exact: min  median  max':>44s} {'f64 ok':>7s} {'s':>5s}"
    print(header)
    for entry in sample_manifest():
        started = time.perf_counter()
        config = AuditConfig(model_path=str(SAMPLES / entry["file"]), data_path=str(SAMPLES / "digits_test.npy"),
                             samples=args.samples, method="exact", gradients="fd")
        result = run_audit(config)
        measured = np.array([s.result.value for s in result.samples])
        ratios = np.array([s.bound.value / s.result.value for s in result.samples])
        checked = "-"
        if args.float64:
            from tests.bounds.reference64 import Reference64

            prepared = result.prepared
            reference = Reference64(prepared.logits_model, prepared.selection.input_name, LOGITS,
                                    batch_one=prepared.selection.fixed_batch is not None)
            violations = 0
            for sample in result.samples[: args.float64]:
                exact = reference.lambda_max(result.data.inputs[sample.index])
                violations += int(sample.bound.value < exact or result.bound.value < exact)
            checked = f"{args.float64 - violations}/{args.float64}"
        bound = result.bound.value
        print(f"{entry['file']:22s} {result.architecture['family']:12s} {bound:12.4g} {measured.max():10.4g} {bound / measured.max():10.4g} "
              f"{ratios.min():>20.4g} {np.median(ratios):8.4g} {ratios.max():10.4g} {checked:>7s} {time.perf_counter() - started:5.1f}")


if __name__ == "__main__":
    main()
