"""Exporter corpus, PaddlePaddle through paddle2onnx, with a float64 Paddle reference.

Why: paddle2onnx graphs (the PaddleOCR family among them) carry their own idioms: BatchNorm kept
as BatchNormalization, Hardswish/Hardsigmoid decomposed or native, Constant nodes, Flatten and
MatMul+Add heads. issue 16 asks for an export of our own, audited against Paddle's float64
gradients.

    /work/venvs/paddle/bin/python tools/corpus/export_paddle.py   # paddlepaddle, paddle2onnx, onnx

Model ``paddle_mbnet`` (NCHW [N, 3, 16, 16], 10 classes, paddle.seed(0)): Conv2D-BN-Hardswish
stem, a residual block (depthwise 3x3 Conv2D-BN-ReLU, 1x1 Conv2D-BN, Add), stride-2
Conv2D-BN-ReLU, AdaptiveAvgPool2D(1), Flatten, Linear. BatchNorm parameters and running
statistics drawn at random (as trained); the Linear head scaled to logit standard deviation 2 on
the samples. Exported with ``paddle.onnx.export`` (paddle2onnx), opset 11, input ``x``
[None, 3, 16, 16] float32.

Reference: the model rebuilt after ``paddle.set_default_dtype("float64")`` with the float32
state dict cast exactly; J by ``paddle.grad`` of each logit (summed over the batch: samples
are independent in eval mode) with respect to the float64 input: [N, 10, 3, 16, 16].
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporter_common import CORPUS, relative_max_error, write_entry  # noqa: E402

import paddle  # noqa: E402
from paddle import nn  # noqa: E402

LOG = logging.getLogger("export_paddle")
NAME = "paddle_mbnet"
NUM_CLASSES = 10
OPSET = 11


class MobileResidual(nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1, bias_attr=False), nn.BatchNorm2D(8), nn.Hardswish())
        self.block = nn.Sequential(
            nn.Conv2D(8, 8, 3, padding=1, groups=8, bias_attr=False), nn.BatchNorm2D(8), nn.ReLU(),
            nn.Conv2D(8, 8, 1, bias_attr=False), nn.BatchNorm2D(8),
        )
        self.down = nn.Sequential(nn.Conv2D(8, 16, 3, stride=2, padding=1, bias_attr=False), nn.BatchNorm2D(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(self.flatten(self.pool(self.down(x))))


def randomise(model: nn.Layer, rng: np.random.Generator) -> None:
    state = model.state_dict()
    for key, value in state.items():
        shape = value.shape
        if key.endswith("._mean"):
            value.set_value((0.2 * rng.standard_normal(shape)).astype(np.float32))
        elif key.endswith("._variance"):
            value.set_value((0.5 + rng.random(shape)).astype(np.float32))
        elif ".weight" in key and len(shape) == 1:  # BatchNorm gamma
            value.set_value((0.5 + rng.random(shape)).astype(np.float32))
        elif ".bias" in key and "head" not in key:  # BatchNorm beta
            value.set_value((0.1 * rng.standard_normal(shape)).astype(np.float32))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    CORPUS.mkdir(parents=True, exist_ok=True)
    paddle.seed(0)
    inputs = np.random.default_rng(18).standard_normal((4, 3, 16, 16)).astype(np.float32)
    model = MobileResidual()
    model.eval()
    randomise(model, np.random.default_rng(0))
    with paddle.no_grad():
        std = float(model(paddle.to_tensor(inputs)).numpy().std())
        model.head.weight.set_value(model.head.weight.numpy() * (2.0 / std))
        model.head.bias.set_value(model.head.bias.numpy() * (2.0 / std))
        logits32 = model(paddle.to_tensor(inputs)).numpy()

    path = CORPUS / f"{NAME}.onnx"
    started = time.perf_counter()
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", "x")]
    paddle.onnx.export(model, str(path.with_suffix("")), input_spec=spec, opset_version=OPSET)
    seconds = time.perf_counter() - started
    onnx.checker.check_model(str(path))

    state = {k: v.numpy() for k, v in model.state_dict().items()}
    paddle.set_default_dtype("float64")
    model64 = MobileResidual()
    model64.set_state_dict({k: paddle.to_tensor(v.astype(np.float64)) for k, v in state.items()})
    model64.eval()
    x64 = paddle.to_tensor(inputs.astype(np.float64), stop_gradient=False)
    logits64 = model64(x64)
    rows = [paddle.grad(logits64[:, k].sum(), x64, retain_graph=True)[0].numpy() for k in range(NUM_CLASSES)]
    jacobians = np.stack(rows, axis=1)
    logits64 = logits64.numpy()
    assert jacobians.dtype == np.float64 and logits64.dtype == np.float64

    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ort_error = relative_max_error(session.run(None, {session.get_inputs()[0].name: inputs})[0], logits32)
    except ImportError:
        ort_error = None
    import paddle2onnx

    entry = write_entry(NAME, inputs=inputs, jacobians=jacobians, logits=logits64, entry={
        "exporter": f"paddle2onnx {paddle2onnx.__version__} (paddle.onnx.export)", "exporter_family": "paddle2onnx",
        "framework": f"paddlepaddle {paddle.__version__}", "generated_by": "tools/corpus/export_paddle.py",
        "batch": "dynamic", "ops": sorted({n.op_type for n in onnx.load(str(path)).graph.node}),
        "architecture": "Conv-BN-Hardswish, residual depthwise Conv-BN-ReLU + 1x1 Conv-BN (Add), stride-2 Conv-BN-ReLU, AdaptiveAvgPool, Flatten, Linear",
        "reference_method": "paddle.grad per class on the float64 rebuild (set_default_dtype float64)",
        "ort_vs_framework_rel_err": ort_error, "export_seconds": round(seconds, 2),
    })
    LOG.info("%s: opset %d, %d bytes, lambda_max %s, ORT vs paddle %s", path.name, entry["opset"], entry["file_size"],
             np.round(entry["reference_lambda_max"], 4), ort_error)


if __name__ == "__main__":
    main()
