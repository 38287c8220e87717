"""A strided Conv's adjoint under an exporter's stale declared shapes (jax2onnx's NHWC value infos)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from fimaudit.autodiff.build import COTANGENT, INPUT_GRAD, build_vjp_model
from tests.autodiff.test_rules import _ort


def test_a_strided_conv_under_stale_declared_shapes_keeps_a_correct_adjoint() -> None:
    """jax2onnx declares NHWC shapes on NCHW Convs: a strided Conv's adjoint must not size itself by them.

    The same Relu -> strided Conv model with and without a wrong value info on the Conv's input
    (the channel and spatial axes swapped): the same J^T u. (A phase-Conv adjoint, since taken
    out, cropped by the declared sizes and failed here.)
    """
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(5)
    weight = numpy_helper.from_array(rng.normal(size=(6, 4, 3, 3)).astype(np.float32), "w")

    def model(stale: bool) -> onnx.ModelProto:
        nodes = [helper.make_node("Relu", ["x"], ["r"]),
                 helper.make_node("Conv", ["r", "w"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")]
        infos = [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 8, 8, 4])] if stale else []
        graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4, 4])], [weight],
                                  value_info=infos)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    u = rng.normal(size=(2, 1, 6, 4, 4)).astype(np.float32)
    pulled = [_ort(build_vjp_model(model(stale), "x", "y")).run([INPUT_GRAD], {"x": x, COTANGENT: u})[0]
              for stale in (False, True)]
    np.testing.assert_allclose(pulled[1], pulled[0], rtol=1e-5, atol=1e-6)
