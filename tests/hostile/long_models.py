"""Models that take forever: to run (an endless Loop) or, for a quadratic analysis, to analyse
(a chain of 100k nodes). Built in code with onnx.helper; every one passes onnx's checker."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fimaudit-hostile")
    model.ir_version = 8
    return model


def endless_loop(trip_count: int = 2**62, features: int = 4, classes: int = 3) -> onnx.ModelProto:
    """logits = Loop(trip_count) { acc + tiny } (x) W: a valid classifier whose run never ends.

    The body is one small Add per iteration; at 2^62 iterations a run would take centuries.
    """
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         helper.make_node("Add", ["acc_in", "tiny"], ["acc_out"], name="step")],
        "body",
        [helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", features])],
        [numpy_helper.from_array(np.full((1, features), 1e-30, np.float32), "tiny")],
    )
    weight = np.random.default_rng(0).standard_normal((features, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip_count", "keep", "x"], ["state"], name="endless", body=body),
         helper.make_node("MatMul", ["state", "W"], ["logits"], name="fc")],
        "endless_loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(np.array(trip_count, np.int64), "trip_count"),
         numpy_helper.from_array(np.array(True), "keep"),
         numpy_helper.from_array(weight, "W")],
    )
    return _model(graph)


def long_chain(nodes: int, features: int = 4, classes: int = 3) -> onnx.ModelProto:
    """x [N, features] -> Add(c) -> Relu -> Add(c) -> Relu ... (``nodes`` in all) -> MatMul W.

    One shared constant c keeps the file small (a few MB at 100k nodes) while every node is a
    distinct step that graph analysis has to walk.
    """
    made = []
    current = "x"
    for index in range(nodes):
        output = f"t{index}"
        if index % 2 == 0:
            made.append(helper.make_node("Add", [current, "c"], [output], name=f"add{index}"))
        else:
            made.append(helper.make_node("Relu", [current], [output], name=f"relu{index}"))
        current = output
    made.append(helper.make_node("MatMul", [current, "W"], ["logits"], name="fc"))
    weight = np.random.default_rng(0).standard_normal((features, classes)).astype(np.float32)
    graph = helper.make_graph(
        made,
        "long_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(np.full((1, features), 1e-3, np.float32), "c"),
         numpy_helper.from_array(weight, "W")],
    )
    return _model(graph)


def gelu_chain(blocks: int, features: int = 4, classes: int = 3) -> onnx.ModelProto:
    """``blocks`` GELUs in a row, each written out as an exporter does: Div-Erf-Add-Mul-Mul.

    Every block is one fusion: a view that re-scanned the graph per fusion was quadratic here.
    """
    made = []
    current = "x"
    for index in range(blocks):
        p = f"g{index}_"
        made += [
            helper.make_node("Div", [current, "sqrt2"], [p + "scaled"], name=p + "div"),
            helper.make_node("Erf", [p + "scaled"], [p + "erf"], name=p + "erf"),
            helper.make_node("Add", [p + "erf", "one"], [p + "shifted"], name=p + "add"),
            helper.make_node("Mul", [current, p + "shifted"], [p + "product"], name=p + "mul"),
            helper.make_node("Mul", [p + "product", "half"], [p + "out"], name=p + "half"),
        ]
        current = p + "out"
    made.append(helper.make_node("MatMul", [current, "W"], ["logits"], name="fc"))
    weight = np.random.default_rng(0).standard_normal((features, classes)).astype(np.float32)
    graph = helper.make_graph(
        made,
        "gelu_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half"),
         numpy_helper.from_array(weight, "W")],
    )
    return _model(graph)


def long_token_path(steps: int, vocabulary: int = 10, width: int = 4) -> onnx.ModelProto:
    """int64 token ids through ``steps`` Identity/Cast nodes to an embedding Gather, then a head:
    no float input, so the loader's message walks the whole path to name the embedding."""
    made = []
    current = "ids"
    for index in range(steps):
        output = f"ids{index}"
        if index % 2:
            made.append(helper.make_node("Cast", [current], [output], name=f"cast{index}", to=TensorProto.INT64))
        else:
            made.append(helper.make_node("Identity", [current], [output], name=f"identity{index}"))
        current = output
    made += [
        helper.make_node("Gather", ["table", current], ["embedded"], name="embedding", axis=0),
        helper.make_node("MatMul", ["embedded", "W"], ["logits"], name="fc"),
    ]
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        made,
        "long_token_path",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(rng.standard_normal((vocabulary, width)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.standard_normal((width, 2)).astype(np.float32), "W")],
    )
    return _model(graph)
