"""A stride-1 Conv's adjoint as a flipped Conv against ConvTranspose, by the channels the Conv reads.

    .venv/bin/python benchmarks/conv_adjoint_channels.py

Why it is kept: ``autodiff/rules/linear.FEW_INPUT_CHANNELS`` was set on these numbers. The VJP
model of one Conv (built by the package, the constant set to 0 for the flipped Conv and to a
large value for ConvTranspose), run with the audit's session options (ORT_ENABLE_ALL, 2 threads,
no memory pattern at 224, as a VGG-11 3x224x224 source runs) on 1 or 16 cotangent rows, the
fastest of 3 rounds of repeated runs each, interleaved. Depthwise and grouped Convs are not
swept: the rule leaves them flipped Convs (ConvTranspose was 2-24x slower there).
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import fimaudit.autodiff.rules.linear as linear
from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, build_vjp_model
from fimaudit.runtime import _session_options

SHAPES = [  # (in channels, out channels, kernel, input size, cotangent rows)
    (1, 32, 3, 28, 16), (3, 64, 3, 32, 16), (3, 64, 7, 32, 16), (3, 64, 3, 224, 1), (3, 64, 3, 224, 4),
    (4, 64, 3, 224, 1), (8, 64, 3, 32, 16), (8, 64, 3, 224, 1), (16, 64, 3, 32, 16), (16, 64, 3, 224, 1),
]


def conv_model(rng: np.random.Generator, c_in: int, c_out: int, kernel: int, size: int):
    """One same-padded stride-1 Conv without bias."""
    weight = numpy_helper.from_array(rng.normal(size=(c_out, c_in, kernel, kernel)).astype(np.float32), "w")
    pad = (kernel - 1) // 2
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[pad] * 4)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, size, size])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def vjp_session(model, few_channels: int, memory_pattern: bool) -> tuple[ort.InferenceSession, list[str]]:
    """A session of the package's VJP model of ``model`` at that ``FEW_INPUT_CHANNELS``; its Conv-kind ops."""
    saved = linear.FEW_INPUT_CHANNELS
    linear.FEW_INPUT_CHANNELS = few_channels
    try:
        vjp = build_vjp_model(model, "x", "y")
    finally:
        linear.FEW_INPUT_CHANNELS = saved
    ops = [node.op_type for node in vjp.graph.node if node.op_type.startswith("Conv")]
    session = ort.InferenceSession(vjp.SerializeToString(), _session_options(2, memory_pattern),
                                   providers=["CPUExecutionProvider"])
    return session, ops


def main() -> None:
    rng = np.random.default_rng(0)
    for c_in, c_out, kernel, size, rows in SHAPES:
        model = conv_model(rng, c_in, c_out, kernel, size)
        x = rng.normal(size=(1, c_in, size, size)).astype(np.float32)
        u = rng.normal(size=(rows, 1, c_out, size, size)).astype(np.float32)
        forms = {"Conv": vjp_session(model, 0, size < 224), "ConvTranspose": vjp_session(model, 1 << 30, size < 224)}
        assert [ops[-1] for _, ops in forms.values()] == ["Conv", "ConvTranspose"], forms
        grads = {name: session.run([INPUT_GRAD], {"x": x, COTANGENT: u})[0] for name, (session, _) in forms.items()}
        err = np.abs(grads["Conv"] - grads["ConvTranspose"]).max() / np.abs(grads["Conv"]).max()
        repeats = max(3, int(2e8 / u.size / kernel**2))
        best = dict.fromkeys(forms, np.inf)
        for _ in range(3):
            for name, (session, _) in forms.items():
                started = time.perf_counter()
                for _ in range(repeats):
                    session.run([INPUT_GRAD], {"x": x, COTANGENT: u})
                best[name] = min(best[name], (time.perf_counter() - started) / repeats * 1000)
        print(f"in {c_in:2d} out {c_out:3d} k{kernel} size {size:3d} rows {rows:2d}: Conv {best['Conv']:7.3f} ms, "
              f"ConvTranspose {best['ConvTranspose']:7.3f} ms, ratio {best['ConvTranspose'] / best['Conv']:.2f}, "
              f"difference {err:.1e}")


if __name__ == "__main__":
    main()
