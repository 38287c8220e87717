"""Resize beyond dense sampling (test_rules.py): refusals, and the map read off the node is ONNX Runtime's.

The rule reads its affine map from onnx's reference implementation; ONNX Runtime, which runs the
audit, must compute the same map, or the certificate would be about a different function.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from fimaudit.certify.propagate import InputSet, propagate
from fimaudit.certify.registry import NotCertified
from fimaudit.graph.view import GraphView
from tests.certify.cases import Case, i64, n


def _resize(mode: str, sizes: tuple[int, ...], shape: tuple[int, ...], **attrs: object) -> Case:
    return Case(f"resize_{mode}", ("Resize",), [n("Resize", ["x", "", "", "s"], mode=mode, **attrs)], shape,
                {"s": i64(*sizes)})


def _certify(case: Case, centre: np.ndarray, eps: float) -> object:
    model = case.model()
    view = GraphView.from_model(model, "x", outputs=["y"])
    return propagate(view, "y", InputSet(centre, eps, 2.0), lambda z: np.eye(z.size))


@pytest.mark.parametrize("mode", ["cubic"])
def test_unhandled_mode_is_refused_naming_op_and_node(mode: str) -> None:
    case = _resize(mode, (1, 2, 6, 6), (1, 2, 3, 3))
    with pytest.raises(NotCertified, match=r"not certified: op Resize at node 'Resize_node_y'.*cubic"):
        _certify(case, np.zeros(case.input_shape), 0.1)


def test_opset_10_resize_is_refused() -> None:
    case = Case("resize_10", ("Resize",), [n("Resize", ["x", "sc"], mode="nearest")], (1, 1, 2, 2),
                {"sc": np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32)}, opset=10)
    with pytest.raises(NotCertified, match="opset 10 Resize"):
        _certify(case, np.zeros(case.input_shape), 0.1)


def test_resizing_the_channel_axis_is_refused() -> None:
    case = _resize("nearest", (1, 4, 3, 3), (1, 2, 3, 3))
    with pytest.raises(NotCertified, match="N or C axis"):
        _certify(case, np.zeros(case.input_shape), 0.1)


def test_scales_that_depend_on_the_input_are_refused() -> None:
    nodes = [n("Reshape", ["x", "flat"], ["sc"]), n("Resize", ["x", "", "sc"], mode="nearest")]
    case = Case("resize_varying", ("Resize",), nodes, (1, 1, 2, 2), {"flat": i64(4)})
    with pytest.raises(NotCertified, match=r"op Resize at node 'Resize_node_y'"):
        _certify(case, np.ones(case.input_shape), 0.1)


@pytest.mark.parametrize(("mode", "attrs"), [
    ("nearest", {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    ("nearest", {"coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_floor"}),
    ("linear", {"coordinate_transformation_mode": "pytorch_half_pixel"}),
], ids=["nearest_floor", "nearest_half_pixel", "linear"])
def test_value_at_x_matches_onnx_runtime(mode: str, attrs: dict[str, object]) -> None:
    case = _resize(mode, (1, 3, 7, 10), (1, 3, 4, 5), **attrs)
    centre = np.random.default_rng(3).standard_normal(case.input_shape)
    box = _certify(case, centre, 0.0).logits  # type: ignore[attr-defined]
    model32 = case.model()
    model32.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    model32.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    session = ort.InferenceSession(model32.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": centre.astype(np.float32)})[0]
    np.testing.assert_allclose(box.at, expected, rtol=1e-6, atol=1e-6)
    assert np.all(box.lo <= box.at) and np.all(box.at <= box.hi)
