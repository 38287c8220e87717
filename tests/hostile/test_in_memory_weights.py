"""The placeholders of weights held in memory (session_weights.py) name a file that is never read.

A model cannot choose that name (the placeholders are fimaudit's, made only for tensors that held
their bytes), but if ONNX Runtime ever resolved it, it would read it from the working directory.
Planted there, under inotify: no open, no read, and the numbers are the weights', not the file's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.runtime import create_session
from fimaudit.session_weights import IN_MEMORY_MIN_BYTES, PLACEHOLDER_LOCATION, session_payload
from tests.hostile.open_watch import OpenWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")

SIDE = 512


def test_a_planted_file_under_the_placeholder_name_is_never_opened(tmp_path: Path, monkeypatch) -> None:
    weight = np.eye(SIDE, dtype=np.float32)
    assert weight.nbytes >= IN_MEMORY_MIN_BYTES
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SIDE])], [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    planted = tmp_path / PLACEHOLDER_LOCATION
    planted.write_bytes(np.full(SIDE * SIDE, 7.0, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)
    watch = OpenWatch(planted)
    try:
        planted.read_bytes()
        assert watch.events() > 0, "inotify did not see a read: the test would prove nothing"
        assert list(session_payload(model).in_memory) == ["w"]
        session, _ = create_session(model, ["CPUExecutionProvider"], 1)
        x = np.arange(SIDE, dtype=np.float32)[None]
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], x)
        assert watch.events() == 0, "the planted file was opened or read"
    finally:
        watch.close()
