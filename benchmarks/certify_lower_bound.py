"""The floor under any local certificate: how far lambda_max itself rises inside the ball.

    .venv/bin/python benchmarks/certify_lower_bound.py [--models resnet18_torchscript ...]
        [--samples 4] [--factors 1e-5,1e-4,1e-3] [--restarts 4] [--steps 20]

Why: issue 10 asks for a median B(x, eps) / lambda_max(x) <= 10 at the l2 radius 1e-3 ||x|| on
ResNet-18, VGG-11 and DenseNet-121. A certificate is an upper bound on lambda_max(F(x')) over
the whole ball, so no valid certificate can be below the largest lambda_max found at any point
of the ball. This script finds such points by projected gradient ascent on lambda_max (the
ascent direction J^T g with J held at the current point, g = d lambda / d logits, exact for
piecewise-linear networks between kinks; ``restarts`` starts at random points of the ball, steps
of eps/4 shrinking by 0.85), evaluating lambda_max exactly at each iterate (the graph Jacobian on
ONNX Runtime, float32, as the audit computes it; the K x K eigenproblem in float64), and prints
per model and radius the median over the samples of max lambda_max(x') / lambda_max(x): a lower
bound on the median ratio any certificate can reach. Each number is a point re-evaluated by the
model, not an estimate. Never run as a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fimaudit.audit import AuditConfig, intake, prepare_model  # noqa: E402
from fimaudit.fisher.exact import exact_lambda_max  # noqa: E402
from fimaudit.gradients import make_source  # noqa: E402

CORPUS = Path("/work/corpus")
MODELS = ("resnet18_torchscript", "vgg11_bn_torchscript", "densenet121_torchscript")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def lambda_and_ascent(jacobian: np.ndarray, logits: np.ndarray) -> tuple[float, np.ndarray]:
    """lambda_max(F) at a point and its gradient with J held fixed: J^T d lambda / d z.

    With w the top eigenvector of F = J^T C J and a = J w, lambda = Var_p(a) and
    d Var_p(a) / d z_j = p_j ((a_j - mean_p a)^2 - Var_p(a)).
    """
    value = exact_lambda_max(jacobian, logits, with_eigenvector=False).value
    p = _softmax(logits)
    root = np.sqrt(p)[:, None] * (jacobian - p @ jacobian)
    _, _, vt = np.linalg.svd(root, full_matrices=False)
    a = jacobian @ vt[0]
    mean = p @ a
    g = p * ((a - mean) ** 2 - p @ (a - mean) ** 2)
    return float(value), jacobian.T @ g


def highest_lambda(source, centre: np.ndarray, eps: float, rng: np.random.Generator, restarts: int, steps: int) -> float:
    """The largest lambda_max met by projected ascent from ``restarts`` random points of the l2 ball."""
    d = centre.size
    directions = rng.standard_normal((restarts, d))
    directions *= (eps * rng.uniform(size=(restarts, 1)) ** (1.0 / d)) / np.linalg.norm(directions, axis=1, keepdims=True)
    points = centre.reshape(1, -1) + directions
    best = 0.0
    step = eps / 4
    for _ in range(steps + 1):
        batch = points.reshape((restarts, *centre.shape)).astype(np.float32)
        jacobians, logits = source.dense(batch), source.logits(batch)
        moves = []
        for jacobian, z in zip(jacobians, logits, strict=True):
            value, gradient = lambda_and_ascent(jacobian, z)
            best = max(best, value)
            moves.append(gradient / max(np.linalg.norm(gradient), 1e-300))
        delta = points + step * np.array(moves) - centre.reshape(1, -1)
        lengths = np.linalg.norm(delta, axis=1, keepdims=True)
        points = centre.reshape(1, -1) + delta * np.minimum(1.0, eps / np.maximum(lengths, 1e-300))
        step *= 0.85
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--factors", default="1e-5,1e-4,1e-3")
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    inputs = np.load(CORPUS / "inputs_3x32x32.npy")[: args.samples].astype(np.float32)
    print(f"{'model':26s} {'eps/||x||':>10s} {'median':>9s}  per sample max lambda(x') / lambda(x)   seconds")
    for name in args.models:
        path = str(CORPUS / f"{name}.onnx")
        prepared = prepare_model(intake(path), AuditConfig(model_path=path, gradients="graph"), inputs[:1])
        source = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
        centres = [lambda_and_ascent(source.dense(x[None])[0], source.logits(x[None])[0])[0] for x in inputs]
        for factor in factors:
            start = time.perf_counter()
            ratios = []
            for index, x in enumerate(inputs):
                eps = factor * float(np.linalg.norm(x))
                rng = np.random.default_rng(index)
                highest = highest_lambda(source, x.astype(np.float64), eps, rng, args.restarts, args.steps)
                ratios.append(max(highest, centres[index]) / centres[index])
            shown = " ".join(f"{r:.3g}" for r in ratios)
            print(f"{name:26s} {factor:10.0e} {np.median(ratios):9.3g}  {shown:38s} {time.perf_counter() - start:7.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
