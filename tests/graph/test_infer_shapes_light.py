"""Shape inference without the weights' bytes gives what onnx's own inference gives.

A model with a weight above WEIGHT_ELEMENTS (a typed input for the inference), a small shape
constant that data propagation must read (a Reshape target), and an IR-3 style duplicate (a
weight also declared as a graph input): same value infos and outputs as
``onnx.shape_inference.infer_shapes``, the weights kept byte for byte, the model not mutated.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from fimaudit.graph.onnx_utils import WEIGHT_ELEMENTS, infer_shapes_light


def _model(declare_weight_as_input: bool) -> onnx.ModelProto:
    rows = WEIGHT_ELEMENTS // 8 + 1  # above the threshold: inferred from its declared type and shape
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8 * rows, 8)).astype(np.float32), "W")
    target = numpy_helper.from_array(np.array([1, -1, 4], dtype=np.int64), "target")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8 * rows])]
    if declare_weight_as_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [8 * rows, 8]))
    graph = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [weight, target])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_light_inference_matches_onnx_and_keeps_the_weights() -> None:
    for declared in (False, True):
        model = _model(declared)
        before = model.SerializeToString()
        expected = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        actual = infer_shapes_light(model, data_prop=True)
        assert model.SerializeToString() == before
        assert [v.SerializeToString() for v in actual.graph.value_info] == [
            v.SerializeToString() for v in expected.graph.value_info
        ]
        assert [v.SerializeToString() for v in actual.graph.output] == [v.SerializeToString() for v in expected.graph.output]
        assert [i.SerializeToString() for i in actual.graph.initializer] == [i.SerializeToString() for i in model.graph.initializer]
        assert [i.name for i in actual.graph.input] == [i.name for i in model.graph.input]
        shape = [d.dim_value for d in next(v for v in actual.graph.value_info if v.name == "r").type.tensor_type.shape.dim]
        assert shape == [1, 8]
