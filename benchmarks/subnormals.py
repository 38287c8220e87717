"""How much subnormal weights slow CPU inference, and what flushing them (or DAZ/FTZ) gives back.

Three small models, each built with normal weights and with a share of its weights replaced by
subnormal values (|w| ~ 1e-39 < float32's smallest normal 1.18e-38), as pruned or decayed units
leave them in real exports:

- ``mlp-relu``:    MatMul + Add + Relu layers, subnormal entries scattered through the weights;
- ``scale-tanh``, ``scale-sigmoid``: a per-feature scale (Mul, as in LayerScale or a folded
                   normalisation) then the activation, a share of the scales subnormal, so
                   subnormal values reach the activation function.

Each subnormal model also runs after ``fimaudit.graph.subnormal.flush_subnormals`` and, for
comparison, with ONNX Runtime's ``session.set_denormal_as_zero`` (DAZ/FTZ on its threads).
Prints the best-of-N milliseconds per batch on the CPU provider, one thread (best, not median,
because the CPU may be shared), and the ratio to the same model with normal weights. Never run as
a test.

    python benchmarks/subnormals.py [--width 1024] [--batch 1024] [--fraction 0.5] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from fimaudit.graph.subnormal import find_subnormals, flush_subnormals

TINY = np.float32(1e-39)


def _model(nodes: list, inits: list, width: int, output: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def mlp(width: int, fraction: float, activation: str, layers: int = 3) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for layer in range(layers):
        weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        mask = rng.random(weight.shape) < fraction
        weight[mask] = TINY * np.sign(weight[mask])
        inits += [numpy_helper.from_array(weight, f"W{layer}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{layer}")]
        nodes += [
            helper.make_node("MatMul", [current, f"W{layer}"], [f"m{layer}"]),
            helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"a{layer}"]),
            helper.make_node(activation, [f"a{layer}"], [f"h{layer}"]),
        ]
        current = f"h{layer}"
    return _model(nodes, inits, width, current)


def scaled_activation(width: int, fraction: float, activation: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 1.5, width).astype(np.float32)
    scale[rng.random(width) < fraction] = TINY
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node(activation, ["m"], ["y"])]
    return _model(nodes, [numpy_helper.from_array(scale, "s")], width, "y")


MODELS: dict[str, Callable[[int, float], onnx.ModelProto]] = {
    "mlp-relu": lambda width, fraction: mlp(width, fraction, "Relu"),
    "scale-tanh": lambda width, fraction: scaled_activation(width, fraction, "Tanh"),
    "scale-sigmoid": lambda width, fraction: scaled_activation(width, fraction, "Sigmoid"),
}


def best_ms(model: onnx.ModelProto, inputs: np.ndarray, repeats: int, denormal_as_zero: bool) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": inputs})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"x": inputs})
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of weights (or units) made subnormal")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    inputs = np.random.default_rng(1).standard_normal((args.batch, args.width)).astype(np.float32)
    print(f"cpu: {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, 1 thread, "
          f"width {args.width}, batch {args.batch}, subnormal share {args.fraction}")
    print(f"{'model':<15}{'weights':<20}{'default':>12}{'DAZ/FTZ session':>18}   (best ms/batch, ratio to normal weights)")
    for name, build in MODELS.items():
        normal = build(args.width, 0.0)
        subnormal = build(args.width, args.fraction)
        flushed = build(args.width, args.fraction)
        report = flush_subnormals(flushed)
        assert report.count > 0 and find_subnormals(flushed).count == 0
        baseline = best_ms(normal, inputs, args.repeats, False)
        for label, model in (("normal", normal), ("subnormal", subnormal), ("subnormal, flushed", flushed)):
            cells = []
            for daz in (False, True):
                ms = baseline if (label == "normal" and not daz) else best_ms(model, inputs, args.repeats, daz)
                cells.append(f"{ms:7.2f} {ms / baseline:4.1f}x")
            print(f"{name:<15}{label:<20}{cells[0]:>12}{cells[1]:>18}")


if __name__ == "__main__":
    main()
