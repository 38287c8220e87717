"""runtime.create_session(model, weights=...): weights held outside the model, appended on the wire."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.errors import ModelError
from fimaudit.runtime import create_session
from fimaudit.session_weights import initializers_on_the_wire

RNG = np.random.default_rng(5)


def _weightless() -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    weights = [numpy_helper.from_array(RNG.standard_normal((300, 200)).astype(np.float32), "W"),
               numpy_helper.from_array(RNG.standard_normal((200,)).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 200])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, weights


def test_appended_weights_parse_as_the_graphs_initializers() -> None:
    model, weights = _weightless()
    parsed = onnx.ModelProto()
    parsed.ParseFromString(b"".join([model.SerializeToString(), *initializers_on_the_wire(weights)]))
    assert [init.name for init in parsed.graph.initializer] == ["W", "b"]
    assert [node.op_type for node in parsed.graph.node] == ["MatMul", "Add"]
    np.testing.assert_array_equal(numpy_helper.to_array(parsed.graph.initializer[0]), numpy_helper.to_array(weights[0]))


def test_a_session_with_weights_on_the_wire_computes_what_the_whole_model_does() -> None:
    model, weights = _weightless()
    whole = onnx.ModelProto()
    whole.CopyFrom(model)
    whole.graph.initializer.extend(weights)
    x = RNG.standard_normal((2, 300)).astype(np.float32)
    wired, loaded = create_session(model, ["CPUExecutionProvider"], 1, weights)
    plain, _ = create_session(whole, ["CPUExecutionProvider"], 1)
    np.testing.assert_array_equal(wired.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])
    assert not loaded.graph.initializer, "the model handed back is the weightless one"


def test_a_weight_naming_an_external_file_is_refused() -> None:
    model, weights = _weightless()
    weights[0].data_location = TensorProto.EXTERNAL
    entry = weights[0].external_data.add()
    entry.key, entry.value = "location", "secret.bin"
    with pytest.raises(ModelError, match="external data"):
        create_session(model, ["CPUExecutionProvider"], 1, weights)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**21 + 5, 515 * 2**20, 2**35 + 1])
def test_varints_match_protobufs_own(value: int) -> None:
    from google.protobuf.internal.encoder import _VarintBytes

    from fimaudit.session_weights import varint

    assert varint(value) == _VarintBytes(value)
