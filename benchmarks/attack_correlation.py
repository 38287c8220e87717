"""Does lambda_max predict adversarial vulnerability on the sample models? The correlation table.

For each sample model and norm: ``fimaudit audit --attack --input-range 0,1`` on the bundled digits,
then Spearman rho and Kendall tau between each sample's lambda_max and 1 / epsilon_min (the verified
minimum-norm attack), each with its percentile-bootstrap 95% interval, the number of pairs, the
median quadratic-regime radius (t along the top eigenvector, over the kept eigenvectors) beside the
median l2 epsilon_min, and the robust accuracy at one radius. Whatever it shows is the finding.

Run from the repository root::

    .venv/bin/python benchmarks/attack_correlation.py [--samples 64]
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

from fimaudit.attacks import InputRange  # noqa: E402
from fimaudit.attacks.stage import AttackConfig  # noqa: E402
from fimaudit.audit import AuditConfig, run_audit  # noqa: E402

SAMPLES = ROOT / "sample_models"
MODELS = ["mlp", "mlp_softmax", "binary_sigmoid", "vgg_small", "resnet_small", "densenet_small", "vit_small"]
#: One radius per norm for the robust-accuracy column (digits in [0, 1]).
RADII = {"2": 0.5, "inf": 0.1}


def interval(value: float | None, bounds: tuple[float, float] | None) -> str:
    """``0.93 [0.85, 0.97]`` or ``n/a``."""
    if value is None:
        return "n/a"
    return f"{value:.3f} [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else f"{value:.3f}"


def main() -> None:
    """Print one row per model and norm."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load: {load} (1, 5, 15 min) on {os.cpu_count()} CPUs")
    print(f"{args.samples} digits, input range [0, 1], seed {args.seed}; rho, tau with bootstrap 95% intervals")
    print("| model | norm | pairs | Spearman rho [95%] | Kendall tau [95%] | median eps_min | "
          "median quadratic radius (l2 t) | robust acc. at eps | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for norm in ("2", "inf"):
            started = time.perf_counter()
            result = run_audit(AuditConfig(
                model_path=str(SAMPLES / f"{name}.onnx"), data_path=str(SAMPLES / "digits_test.npy"),
                samples=args.samples, seed=args.seed, bounds=False,
                attack=AttackConfig(norm=norm, radii=(RADII[norm],), input_range=InputRange(0.0, 1.0)),  # type: ignore[arg-type]
            ))
            summary = result.attack
            assert summary is not None and summary.correlation is not None
            corr = summary.correlation
            eps = [s.attack.epsilon_min for s in result.samples if s.attack and s.attack.epsilon_min is not None]
            robust = summary.success_rate_by_eps[0]
            quadratic = "n/a" if summary.quadratic_radius is None else f"{summary.quadratic_radius:.3g}"
            rho, tau = interval(corr.spearman, corr.spearman_interval), interval(corr.kendall, corr.kendall_interval)
            print(f"| {name} | l{norm} | {corr.count}/{summary.attempted} | {rho} | {tau} | "
                  f"{np.median(eps):.3g} | {quadratic} ({summary.quadratic_checked} samples) | "
                  f"{robust.robust_accuracy:.0%} at {robust.eps:g} | {time.perf_counter() - started:.0f} |")


if __name__ == "__main__":
    main()
