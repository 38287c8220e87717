"""One strided Conv's adjoint: s x s phase Convs (tried at 9dd7692) against ConvTranspose, one at a time.

    git worktree add /tmp/phase 9dd7692
    PYTHONPATH=/tmp/phase .venv/bin/python benchmarks/conv_adjoint_forms.py

Why it is kept: the phase-Conv form (``_adjoint_polyphase`` at commit 9dd7692) was taken out on
these numbers. Per ResNet-shaped strided Conv (the stem 7x7/2, 3x3/2 and 1x1/2 at the spatial
sizes of a 32x32 and a 224x224 input), the VJP model of that Conv alone, built both ways, run on
1 and 10 cotangents with the audit's session options (ORT_ENABLE_ALL, 2 threads), the fastest of
7 runs each. Measured 2026-12-02 03:27 UTC, load ~2: the phase form took 1.3-4.5x ConvTranspose's
time on every shape. Needs the 9dd7692 checkout (the phase form is not in the package any more).
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import fimaudit.autodiff.rules.linear as linear
from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, build_vjp_model
from fimaudit.runtime import _session_options

SHAPES = [  # (in channels, out channels, kernel, input size, stride, pad)
    (3, 64, 7, 32, 2, 3), (3, 64, 7, 224, 2, 3), (64, 128, 3, 16, 2, 1), (64, 128, 3, 56, 2, 1),
    (128, 256, 3, 28, 2, 1), (64, 128, 1, 16, 2, 0), (64, 128, 1, 56, 2, 0), (256, 512, 1, 14, 2, 0),
]


def conv_model(rng, c_in, c_out, kernel, size, stride, pad):
    weight = numpy_helper.from_array(rng.normal(size=(c_out, c_in, kernel, kernel)).astype(np.float32), "w")
    out = (size + 2 * pad - kernel) // stride + 1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride] * 2, pads=[pad] * 4)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, out, out])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out


def best_ms(model, x, u) -> float:
    session = ort.InferenceSession(build_vjp_model(model, "x", "y").SerializeToString(), _session_options(2),
                                   providers=["CPUExecutionProvider"])
    best = np.inf
    for _ in range(7):
        started = time.perf_counter()
        session.run([INPUT_GRAD], {"x": x, COTANGENT: u})
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    rng = np.random.default_rng(0)
    phase_form = linear._adjoint_polyphase
    for c_in, c_out, kernel, size, stride, pad in SHAPES:
        model, out = conv_model(rng, c_in, c_out, kernel, size, stride, pad)
        x = rng.normal(size=(1, c_in, size, size)).astype(np.float32)
        for rows in (1, 10):
            u = rng.normal(size=(rows, 1, c_out, out, out)).astype(np.float32)
            linear._adjoint_polyphase = phase_form
            phases = best_ms(model, x, u)
            linear._adjoint_polyphase = lambda *args, **kwargs: None
            transpose = best_ms(model, x, u)
            linear._adjoint_polyphase = phase_form
            print(f"in {c_in:3d} out {c_out:3d} k{kernel} size {size:3d} rows {rows:2d}: phase Convs {phases:7.2f} ms, "
                  f"ConvTranspose {transpose:7.2f} ms, ratio {phases / transpose:.2f}")


if __name__ == "__main__":
    main()
