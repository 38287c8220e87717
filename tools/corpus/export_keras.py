"""Exporter corpus, TensorFlow/Keras through tf2onnx, with a float64 tf.GradientTape reference.

Why: Keras models reach users as tf2onnx graphs: NHWC inputs, Transposes around every Conv,
BatchNormalization folded or kept as Mul/Add, DepthwiseConv2D as a grouped Conv, a Dense head
with its Softmax inside the graph. issue 16 asks for such an export, audited against the
framework's own float64 gradients.

    /work/venvs/tf/bin/python tools/corpus/export_keras.py   # tensorflow, tf2onnx, onnx

Model ``keras_dwres`` (NHWC input [N, 16, 16, 3], 10 classes, keras.utils.set_random_seed(0)):
Conv2D-BN-ReLU stem, a residual block (DepthwiseConv2D-BN-ReLU, 1x1 Conv2D-BN, Add, ReLU), a
stride-2 Conv2D-BN-ReLU, GlobalAveragePooling2D, Dense(10, softmax). BatchNormalization's gamma,
beta, moving mean and moving variance are drawn at random (as a trained network's, not (1, 0,
0, 1)), and the Dense layer is scaled so that the pre-softmax logits have standard deviation 2 on
the samples. Exported with ``tf2onnx.convert.from_function`` (a tf.function over the model with
input signature [None, 16, 16, 3] float32, named ``input``), opset 15.

Reference: the same architecture rebuilt under ``keras.config.set_floatx("float64")`` with the
Dense activation removed (the logits fimaudit differentiates are the Softmax input), the float32
weights set into it (cast exactly), and ``tf.GradientTape.batch_jacobian`` of the logits with
respect to the float64 input: J [N, 10, 16, 16, 3].
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

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
import tf2onnx  # noqa: E402

LOG = logging.getLogger("export_keras")
NAME = "keras_dwres"
NUM_CLASSES = 10
OPSET = 15


def build(softmax: bool) -> keras.Model:
    layers = keras.layers
    inputs = keras.Input((16, 16, 3), name="input")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.Conv2D(8, 1, use_bias=False)(y))
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


def randomise_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([
                (0.5 + rng.random(gamma.shape)).astype(np.float32),
                (0.1 * rng.standard_normal(beta.shape)).astype(np.float32),
                (0.2 * rng.standard_normal(mean.shape)).astype(np.float32),
                (0.5 + rng.random(variance.shape)).astype(np.float32),
            ])


def logits_model(model: keras.Model) -> keras.Model:
    """The pre-softmax logits of ``model`` (its last Dense without the activation), float32."""
    head = model.layers[-1]
    kernel, bias = head.get_weights()
    features = keras.Model(model.inputs, model.layers[-2].output)
    return lambda x: features(x, training=False) @ kernel + bias


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    CORPUS.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    inputs = np.random.default_rng(17).standard_normal((4, 16, 16, 3)).astype(np.float32)
    model = build(softmax=True)
    randomise_batchnorm(model, np.random.default_rng(0))
    head = model.layers[-1]
    kernel, bias = head.get_weights()
    std = float(np.std(np.asarray(logits_model(model)(inputs))))
    head.set_weights([kernel * (2.0 / std), bias * (2.0 / std)])

    path = CORPUS / f"{NAME}.onnx"
    started = time.perf_counter()
    spec = [tf.TensorSpec([None, 16, 16, 3], tf.float32, name="input")]
    function = tf.function(lambda x: model(x, training=False), input_signature=spec)
    tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET, output_path=str(path))
    seconds = time.perf_counter() - started
    onnx.checker.check_model(str(path))

    # float64 reference: same architecture, floatx float64, weights cast exactly.
    weights = model.get_weights()
    keras.config.set_floatx("float64")
    model64 = build(softmax=False)
    model64.set_weights([w.astype(np.float64) for w in weights])
    x64 = tf.constant(inputs.astype(np.float64))
    with tf.GradientTape() as tape:
        tape.watch(x64)
        logits64 = model64(x64, training=False)
    jacobians = tape.batch_jacobian(logits64, x64).numpy()
    logits64 = logits64.numpy()
    keras.config.set_floatx("float32")

    probabilities = model(inputs, training=False).numpy()
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ort_error = relative_max_error(session.run(None, {session.get_inputs()[0].name: inputs})[0], probabilities)
    except ImportError:
        ort_error = None
    entry = write_entry(NAME, inputs=inputs, jacobians=jacobians, logits=logits64, entry={
        "exporter": f"tf2onnx {tf2onnx.__version__} (convert.from_function)", "exporter_family": "tf2onnx",
        "framework": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "generated_by": "tools/corpus/export_keras.py", "batch": "dynamic", "layout": "NHWC",
        "output_kind": "softmax probabilities (logits: the Softmax input)",
        "ops": sorted({n.op_type for n in onnx.load(str(path)).graph.node}),
        "architecture": "Conv-BN-ReLU, residual DepthwiseConv2D-BN-ReLU + 1x1 Conv-BN (Add), stride-2 Conv-BN-ReLU, GAP, Dense softmax",
        "reference_method": "tf.GradientTape.batch_jacobian on the float64 rebuild (floatx float64, Dense without softmax)",
        "ort_vs_framework_rel_err": ort_error, "export_seconds": round(seconds, 2),
    })
    LOG.info("%s: opset %d, %d bytes, lambda_max %s, ORT vs keras %s", path.name, entry["opset"], entry["file_size"],
             np.round(entry["reference_lambda_max"], 4), ort_error)


if __name__ == "__main__":
    main()
