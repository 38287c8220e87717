"""bounds/copies.py: which chains are followed as pure copies, and which are refused.

A chain wrongly taken for copies would let the Gemm rule bound the weight on a span the input
does not stay in (an invalid bound), so every refusal is tested: windows that average distinct
entries, ReduceSum (a scaled copy), a linear Resize.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fimaudit.bounds.copies import copy_sources
from fimaudit.graph.view import GraphView


def _view(
    nodes: list[onnx.NodeProto], shape: list[int], constants: dict[str, np.ndarray], opset: int = 13
) -> GraphView:
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return GraphView.from_model(model, "x", ["y"], tuple(shape[1:]))


def _gather_chain(window_indices: np.ndarray, reduce: str = "ReduceMean") -> list[onnx.NodeProto]:
    return [
        helper.make_node("Relu", ["x"], ["r"]),  # input-dependent start of the chain
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("GatherND", ["t", "idx"], ["g"]),
        helper.make_node(reduce, ["g"], ["m"], axes=[3], keepdims=0),
        helper.make_node("Transpose", ["m"], ["u"], perm=[0, 3, 1, 2]),
        helper.make_node("Flatten", ["u"], ["y"], axis=1),
    ]


def test_dynamo_adaptive_pool_is_a_copy_of_each_channel() -> None:
    indices = np.zeros((1, 7, 7, 1, 3), dtype=np.int64)  # every window is pixel (0, 0) of a 1 x 1 map
    view = _view(_gather_chain(indices), [1, 2, 1, 1], {"idx": indices})
    start, sources = copy_sources(view, "y")
    assert start == "r"
    assert sources.tolist() == [0] * 49 + [1] * 49


def test_windows_of_one_entry_copied_twice_are_copies() -> None:
    indices = np.zeros((1, 2, 2, 2, 3), dtype=np.int64)  # two copies of the same pixel per window
    view = _view(_gather_chain(indices), [1, 2, 1, 1], {"idx": indices})
    assert copy_sources(view, "y") is not None


def test_windows_averaging_distinct_entries_are_refused() -> None:
    indices = np.zeros((1, 2, 2, 2, 3), dtype=np.int64)
    indices[0, :, :, 1, 2] = 1  # the second entry of every window is pixel (0, 0, 1): a real average
    view = _view(_gather_chain(indices), [1, 2, 1, 2], {"idx": indices})
    assert copy_sources(view, "y") is None


def test_reduce_sum_is_not_followed() -> None:
    indices = np.zeros((1, 7, 7, 1, 3), dtype=np.int64)
    view = _view(_gather_chain(indices, "ReduceSum"), [1, 2, 1, 1], {"idx": indices})
    assert copy_sources(view, "y") is None


def test_linear_resize_is_refused_and_nearest_followed() -> None:
    def chain(mode: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Resize", ["r", "", "", "sizes"], ["s"], mode=mode),
            helper.make_node("Flatten", ["s"], ["y"], axis=1),
        ]

    sizes = np.array([1, 2, 4, 4], dtype=np.int64)
    assert copy_sources(_view(chain("linear"), [1, 2, 2, 2], {"sizes": sizes}), "y") is None
    start, sources = copy_sources(_view(chain("nearest"), [1, 2, 2, 2], {"sizes": sizes}), "y")
    assert start == "r" and np.bincount(sources).tolist() == [4] * 8


def test_a_permutation_gains_nothing() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Flatten", ["t"], ["y"], axis=1)]
    assert copy_sources(_view(nodes, [1, 3, 4], {}), "y") is None


def test_a_chain_through_a_huge_tensor_is_not_run() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Expand", ["r", "shape"], ["e"]),  # 25 million entries, then one row of them
        helper.make_node("Gather", ["e", "row"], ["g"], axis=2),
        helper.make_node("Flatten", ["g"], ["y"], axis=1),
    ]
    constants = {"shape": np.array([1, 3, 4096, 2048], dtype=np.int64), "row": np.array([0], dtype=np.int64)}
    assert copy_sources(_view(nodes, [1, 3, 1, 1], constants), "y") is None
    small = {"shape": np.array([1, 3, 4, 2], dtype=np.int64), "row": np.array([0], dtype=np.int64)}
    start, sources = copy_sources(_view(nodes, [1, 3, 1, 1], small), "y")
    assert start == "r" and sources.tolist() == [0, 0, 1, 1, 2, 2]
