"""Exporter corpus, JAX/Flax through jax2onnx, with a float64 ``jax.jacrev`` reference.

Why: jax2onnx lowers jaxprs, not modules: NHWC convolutions wrapped in Transposes, BatchNorm as
arithmetic or BatchNormalization, GELU as its tanh formula or the opset-20 Gelu, means as
ReduceMean; it targets recent opsets (23 by default). issue 16 asks for such an export of our
own, audited against JAX's own float64 gradients.

    /work/venvs/jax/bin/python tools/corpus/export_jax.py   # jax, flax, jax2onnx, onnx

Model ``jax_flax_cnn`` (flax.nnx, NHWC [N, 16, 16, 3], 10 classes, nnx.Rngs(0)): Conv-BN-ReLU
stem, a residual block (depthwise 3x3 Conv (feature_group_count=8)-BN-ReLU, 1x1 Conv, Add, ReLU),
stride-2 Conv, GELU (jax.nn.gelu, tanh approximation), spatial mean, Linear. BatchNorm in
inference mode (use_running_average=True) with scale, bias, mean and variance drawn at random
(as trained); the Linear head scaled to logit standard deviation 2 on the samples. Exported with
``jax2onnx.to_onnx(model, [("B", 16, 16, 3)])`` at its default opset, input ``input``.

Reference: after the export, ``jax_enable_x64`` is switched on, every float32 leaf of the
module's state is cast to float64 (exactly) and ``jax.jacrev`` of x -> model(x[None])[0] gives J
[N, 10, 16, 16, 3] per sample in float64.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporter_common import CORPUS, relative_max_error, write_entry  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import flax  # noqa: E402
from flax import nnx  # noqa: E402
from jax2onnx import to_onnx  # noqa: E402

LOG = logging.getLogger("export_jax")
NAME = "jax_flax_cnn"
NUM_CLASSES = 10


class ResidualCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.stem = nnx.Conv(3, 8, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.depthwise = nnx.Conv(8, 8, (3, 3), feature_group_count=8, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.pointwise = nnx.Conv(8, 8, (1, 1), rngs=rngs)
        self.down = nnx.Conv(8, 16, (3, 3), strides=(2, 2), rngs=rngs)
        self.head = nnx.Linear(16, NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.stem(x)))
        y = self.pointwise(nnx.relu(self.bn2(self.depthwise(x))))
        x = nnx.relu(x + y)
        x = jax.nn.gelu(self.down(x))
        return self.head(jnp.mean(x, axis=(1, 2)))


def randomise_batchnorm(model: ResidualCNN, rng: np.random.Generator) -> None:
    for norm in (model.bn1, model.bn2):
        shape = norm.scale[...].shape
        norm.scale[...] = jnp.asarray((0.5 + rng.random(shape)).astype(np.float32))
        norm.bias[...] = jnp.asarray((0.1 * rng.standard_normal(shape)).astype(np.float32))
        norm.mean[...] = jnp.asarray((0.2 * rng.standard_normal(shape)).astype(np.float32))
        norm.var[...] = jnp.asarray((0.5 + rng.random(shape)).astype(np.float32))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    CORPUS.mkdir(parents=True, exist_ok=True)
    inputs = np.random.default_rng(19).standard_normal((4, 16, 16, 3)).astype(np.float32)
    model = ResidualCNN(nnx.Rngs(0))
    randomise_batchnorm(model, np.random.default_rng(0))
    std = float(np.std(np.asarray(model(jnp.asarray(inputs)))))
    model.head.kernel[...] = model.head.kernel[...] * (2.0 / std)
    model.head.bias[...] = model.head.bias[...] * (2.0 / std)
    logits32 = np.asarray(model(jnp.asarray(inputs)))

    path = CORPUS / f"{NAME}.onnx"
    started = time.perf_counter()
    proto = to_onnx(model, [("B", 16, 16, 3)], model_name=NAME, input_names=["input"], output_names=["logits"])
    onnx.save(proto, str(path))
    seconds = time.perf_counter() - started
    onnx.checker.check_model(str(path))

    jax.config.update("jax_enable_x64", True)
    graphdef, state = nnx.split(model)
    state64 = jax.tree.map(
        lambda leaf: jnp.asarray(np.asarray(leaf).astype(np.float64))
        if np.issubdtype(np.asarray(leaf).dtype, np.floating) else leaf, state)
    model64 = nnx.merge(graphdef, state64)

    def logits_of(x):
        return model64(x[None])[0]

    jacobian_of = jax.jit(jax.jacrev(logits_of))
    x64 = [jnp.asarray(row.astype(np.float64)) for row in inputs]
    jacobians = np.stack([np.asarray(jacobian_of(x)) for x in x64])
    logits64 = np.stack([np.asarray(logits_of(x)) for x in x64])
    assert jacobians.dtype == np.float64 and logits64.dtype == np.float64

    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ort_error = relative_max_error(session.run(None, {session.get_inputs()[0].name: inputs})[0], logits32)
    except ImportError:
        ort_error = None
    entry = write_entry(NAME, inputs=inputs, jacobians=jacobians, logits=logits64, entry={
        "exporter": f"jax2onnx {importlib.metadata.version('jax2onnx')} (to_onnx)",
        "exporter_family": "jax2onnx",
        "framework": f"jax {jax.__version__}, flax {flax.__version__}", "generated_by": "tools/corpus/export_jax.py",
        "batch": "dynamic (symbolic B)", "layout": "NHWC",
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "architecture": "flax.nnx Conv-BN-ReLU, residual depthwise Conv-BN-ReLU + 1x1 Conv (Add), stride-2 Conv, GELU (tanh), mean, Linear",
        "reference_method": "jax.jacrev with jax_enable_x64 on the float64-cast nnx state",
        "ort_vs_framework_rel_err": ort_error, "export_seconds": round(seconds, 2),
    })
    LOG.info("%s: opset %d, %d bytes, lambda_max %s, ORT vs jax %s", path.name, entry["opset"], entry["file_size"],
             np.round(entry["reference_lambda_max"], 4), ort_error)


if __name__ == "__main__":
    main()
