"""VALIDITY through Resize: B(x, eps) >= lambda_max(F(x')) on a small conv net with a linear upsampling
and a nearest downsampling Resize (the op torchvision's VGG export carries), as test_validity.py does
for the sample models: random points and projected gradient ascent, the best evaluated in float64.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.certify.certifier import Certifier
from fimaudit.gradients import make_source
from fimaudit.graph.selection import LOGITS
from tests.bounds.reference64 import Reference64
from tests.certify import test_validity
from tests.certify.models import SAMPLES, Ready
from tests.certify.sampling import ball_points


def _resize_net() -> onnx.ModelProto:
    rng = np.random.default_rng(11)

    def weight(name: str, *shape: int, scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def scales(name: str, *values: float) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, dtype=np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Resize", ["p1", "", "up"], ["u"], mode="linear",
                         coordinate_transformation_mode="half_pixel", name="upsample"),
        helper.make_node("Conv", ["u", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Resize", ["r2", "", "down"], ["d"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor", name="downsample"),
        helper.make_node("Flatten", ["d"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1, name="fc"),
    ]
    inits = [weight("w1", 4, 1, 3, 3, scale=0.8), weight("b1", 4, scale=0.1),
             weight("w2", 4, 4, 3, 3, scale=0.4), weight("b2", 4, scale=0.1),
             weight("w3", 10, 36, scale=0.5), weight("b3", 10, scale=0.1),
             scales("up", 1.0, 1.0, 1.5, 1.5), scales("down", 1.0, 1.0, 0.5, 0.5)]
    graph = helper.make_graph(
        nodes, "resize_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def resize_net(tmp_path_factory: pytest.TempPathFactory) -> Ready:
    path = tmp_path_factory.mktemp("resize") / "resize_net.onnx"
    onnx.save(_resize_net(), str(path))
    inputs = np.load(SAMPLES / "digits_test.npy")
    prepared = prepare_model(intake(str(path)), AuditConfig(model_path=str(path)), inputs[:1])
    name_in = prepared.selection.input_name
    certifier = Certifier(prepared.logits_model, name_in, LOGITS, tuple(inputs.shape[1:]))
    reference = Reference64(prepared.logits_model, name_in, LOGITS, batch_one=prepared.selection.fixed_batch == 1)
    source = make_source("graph", prepared.runner, inputs.shape[1:], prepared.num_classes).source
    return Ready(prepared, certifier, reference, source, inputs)


def _centre(ready: Ready) -> np.ndarray:
    """A digit moved off its ties (blank regions make equal max-pool candidates, where J(x) is a set)."""
    noise = np.random.default_rng(5).standard_normal(ready.inputs[5].shape)
    return ready.inputs[5].astype(np.float64) + 0.01 * noise


def test_at_the_point_the_certificate_is_lambda_max(resize_net: Ready) -> None:
    centre = _centre(resize_net)
    exact = resize_net.reference.lambda_max(centre)
    value = resize_net.certifier.bound(centre, 0.0, "2").value
    assert exact <= value <= exact * (1 + 1e-6), (exact, value)


@pytest.mark.parametrize("norm", [2.0, np.inf], ids=["l2", "linf"])
@pytest.mark.parametrize("factor", [1e-3, 1e-2])
def test_certificate_is_above_lambda_max_in_the_ball(resize_net: Ready, factor: float, norm: float) -> None:
    rng = np.random.default_rng(int(factor * 1e6))
    centre = _centre(resize_net)
    eps = factor * float(np.linalg.norm(centre)) / (1.0 if norm == 2.0 else np.sqrt(centre.size))
    bound = resize_net.certifier.bound(centre, eps, "2" if norm == 2.0 else "inf").value
    randoms = ball_points(rng, centre, eps, norm, test_validity.RANDOM_POINTS)
    points = np.concatenate([randoms, test_validity._ascend(resize_net, rng, centre, eps, norm)])
    values = test_validity._lambda32(resize_net, points)
    candidates = points[np.argsort(values)[-test_validity.EXACT_POINTS:]]
    exact = [resize_net.reference.lambda_max(point) for point in candidates]
    assert max(exact) <= bound, (factor, norm, max(exact), bound)
