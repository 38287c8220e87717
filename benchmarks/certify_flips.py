"""How many ReLUs really change sign inside the l2 ball of radius f * ||x||, against how many a certificate leaves unstable.

    .venv/bin/python benchmarks/certify_flips.py [--models resnet18_torchscript ...] [--factors 1e-5,1e-4,1e-3]
        [--samples 4] [--points 48] [--corpus /work/corpus]
    /work/venvs/torch/bin/python benchmarks/certify_flips.py --first-order --samples 2   # torch + onnx2torch

Why: issue 10's certificates are vacuous from 10^-4 ||x|| on the 3x32x32 exports because their
ranges leave ~10^3 ReLUs unstable (``certificates[].unstable_activations``), each one's slope
free in [0, 1]. This script counts the ReLUs seen to flip at ``points`` random points of the
ball's sphere per input (every ReLU's pre-activation exposed as an output, ONNX Runtime,
optimisations off): a lower bound on the truly unstable count. A large gap between the two says
the ranges, not the network, make the certificate vacuous; the count itself sizes any exact
method that must branch on the unstable ReLUs (2^count cases). Random points underestimate it:
a random direction moves a pre-activation by about 1/sqrt(d) of what its own gradient direction
does. ``--first-order`` counts instead the ReLUs each flippable alone to first order,
|z_i(x)| < eps ||grad z_i(x)||_2, with every gradient row from forward-mode AD in PyTorch on the
onnx2torch conversion (exact for the first layer, an estimate deeper). Never run as a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

MODELS = ("resnet18_torchscript", "vgg11_bn_torchscript", "densenet121_torchscript")


def exposed_session(path: Path) -> tuple[ort.InferenceSession, str]:
    """A session returning every ReLU's input beside the model's outputs."""
    model = onnx.load(str(path))
    for node in [node for node in model.graph.node if node.op_type == "Relu"]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every ReLU input
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def flips(session: ort.InferenceSession, name: str, x: np.ndarray, radius: float, points: int,
          rng: np.random.Generator) -> tuple[int, int]:
    """(ReLUs whose sign differs from x's at some sampled point of the sphere, ReLUs in all)."""
    outputs = len(session.get_outputs())
    relus = range(1, outputs)
    centre = session.run(None, {name: x[None]})
    signs = [centre[i] > 0 for i in relus]
    seen = [np.zeros_like(s) for s in signs]
    for _ in range(points):
        direction = rng.standard_normal(x.shape).astype(np.float32)
        direction *= radius / np.linalg.norm(direction)
        values = session.run(None, {name: (x + direction)[None]})
        for k, i in enumerate(relus):
            seen[k] |= (values[i] > 0) != signs[k]
    return sum(int(s.sum()) for s in seen), sum(int(s.size) for s in signs)


def first_order_counts(path: Path, inputs: np.ndarray, factors: list[float]) -> list[list[int]]:
    """Per input, per factor: ReLUs with |z_i(x)| < f ||x|| ||grad z_i(x)|| (PyTorch forward mode)."""
    import onnx2torch
    import torch

    module = onnx2torch.convert(onnx.load(str(path))).eval()
    graph = module.graph
    inputs_of_relus = [
        node.args[0] for node in graph.nodes
        if (node.op == "call_module" and isinstance(module.get_submodule(node.target), torch.nn.ReLU))
        or (node.op == "call_function" and getattr(node.target, "__name__", "") == "relu")
    ]
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = (tuple(inputs_of_relus),)
    module.recompile()

    def pre_activations(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.flatten() for t in module(v)])

    counts = []
    for array in inputs:
        x = torch.from_numpy(array)[None]
        with torch.no_grad():
            z = pre_activations(x).double()
        squares = torch.zeros_like(z)
        size = x.numel()
        for start in range(0, size, 128):
            basis = torch.zeros(min(128, size - start), size)
            basis[torch.arange(basis.shape[0]), torch.arange(start, start + basis.shape[0])] = 1
            tangents = basis.reshape(basis.shape[0], 1, *x.shape[1:])
            columns = torch.vmap(lambda t: torch.func.jvp(pre_activations, (x,), (t,))[1])(tangents)
            squares += (columns.double() ** 2).sum(0)
        norms = squares.sqrt()
        counts.append([int((z.abs() < f * float(x.norm()) * norms).sum()) for f in factors])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--factors", default="1e-5,1e-4,1e-3")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--points", type=int, default=48)
    parser.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    parser.add_argument("--first-order", action="store_true", help="count first-order flippable ReLUs (torch)")
    args = parser.parse_args()
    inputs = np.load(args.corpus / "inputs_3x32x32.npy")[: args.samples].astype(np.float32)
    factors = [float(f) for f in args.factors.split(",")]
    if args.first_order:
        print(f"ReLUs flippable alone to first order, |z| < f ||x|| ||grad z||, factors {factors} (per input)")
        for model in args.models:
            try:
                print(f"{model:26s} {first_order_counts(args.corpus / f'{model}.onnx', inputs, factors)}")
            except Exception as exc:  # onnx2torch or vmap refusing an op: say so, go on
                print(f"{model:26s} not measured: {str(exc).splitlines()[0][:100]}")
        return
    print(f"ReLUs seen flipping at {args.points} random points of the l2 sphere of radius f ||x|| (per input)")
    for model in args.models:
        session, name = exposed_session(args.corpus / f"{model}.onnx")
        for factor in factors:
            rng = np.random.default_rng(0)
            counts = []
            total = 0
            for x in inputs:
                count, total = flips(session, name, x, factor * float(np.linalg.norm(x)), args.points, rng)
                counts.append(count)
            print(f"{model:26s} {factor:7.0e}  median {int(np.median(counts)):6d}  per input {counts}  of {total}")


if __name__ == "__main__":
    main()
