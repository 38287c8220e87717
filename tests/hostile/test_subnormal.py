"""Subnormal weights: found in initializers and Constant nodes, warned about, flushed on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.cli import main
from fimaudit.graph.subnormal import find_subnormals, flush_subnormals, subnormal_mask
from tests.hostile import models


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_mask_marks_only_nonzero_values_below_the_smallest_normal(dtype) -> None:
    tiny = np.finfo(dtype).tiny
    values = np.array([0.0, tiny, -tiny, tiny / 2, -tiny / 4, 1.0, np.inf, np.nan], dtype=dtype)
    assert subnormal_mask(values).tolist() == [False, False, False, True, True, False, False, False]


def _with_subnormal_constant(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add a Constant node holding subnormals (its output unused: only the scan is tested)."""
    value = np.array([1e-40, 2.0, -3e-42], dtype=np.float32)
    model.graph.node.append(helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(value, "cvalue")))
    return model


def test_find_counts_initializers_and_constants() -> None:
    model = _with_subnormal_constant(models.subnormal_weights(features=4, classes=3))
    report = find_subnormals(model)
    assert report.count == 3 + 2
    assert report.total == 12 + 3
    assert dict(report.tensors) == {"W": 3, "cvalue": 2}
    assert report.summary().startswith("5 of 15 weights, in 2 tensors (W: 3, cvalue: 2)")


def test_flush_zeroes_subnormals_and_nothing_else() -> None:
    model = _with_subnormal_constant(models.subnormal_weights())
    before = numpy_helper.to_array(model.graph.initializer[0]).copy()
    flushed = flush_subnormals(model)
    assert flushed.count == 5
    assert find_subnormals(model).count == 0
    after = numpy_helper.to_array(model.graph.initializer[0])
    mask = subnormal_mask(before)
    assert np.all(after[mask] == 0)
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert model.graph.initializer[0].name == "W"


def test_clean_model_reports_nothing() -> None:
    model = models.linear()
    assert find_subnormals(model).count == 0
    assert flush_subnormals(model).count == 0


def test_audit_warns_and_flushes_on_request(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(models.subnormal_weights().SerializeToString())
    warned = CliRunner().invoke(main, ["audit", str(path), "--samples", "2", "--gradients", "fd"])
    flushed = CliRunner().invoke(main, ["audit", str(path), "--samples", "2", "--gradients", "fd", "--flush-subnormals"])
    assert warned.exit_code == 0 and flushed.exit_code == 0
    assert "--flush-subnormals" in warned.stderr
    assert "subnormal" not in flushed.stderr
    # the file itself is never changed
    assert find_subnormals(onnx.load(path)).count == 3


def test_flushing_does_not_change_lambda(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(models.subnormal_weights().SerializeToString())
    config = AuditConfig(model_path=str(path), samples=3, gradients="fd")
    kept = run_audit(config)
    flushed = run_audit(AuditConfig(**{**config.__dict__, "flush_subnormals": True}))
    np.testing.assert_allclose(
        [s.result.value for s in flushed.samples], [s.result.value for s in kept.samples], rtol=1e-6
    )


def test_float_list_attributes_are_scanned_and_flushed() -> None:
    """ai.onnx.ml operators keep their weights in float-list attributes (LinearClassifier ...)."""
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "scores"], name="linear", domain="ai.onnx.ml",
        coefficients=[1.0, 1e-40, -2.0, -1e-41], intercepts=[0.5, 0.0], classlabels_ints=[0, 1],
    )
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])], [])
    model = helper.make_model(graph)
    report = find_subnormals(model)
    assert (report.count, report.total, report.tensors) == (2, 6, [("linear.coefficients", 2)])
    flush_subnormals(model)
    coefficients = next(a for a in model.graph.node[0].attribute if a.name == "coefficients")
    assert list(coefficients.floats) == [1.0, 0.0, -2.0, 0.0]


def test_a_real_export_with_subnormal_weights() -> None:
    """skl2onnx's MLPClassifier export (tests/models, trained with L2 decay) holds 86 of them."""
    path = Path(__file__).resolve().parents[1] / "models" / "sklearn_mlp_tensor.onnx"
    if not path.exists():
        pytest.skip("tests/models not built")
    report = find_subnormals(onnx.load(path))
    assert report.count > 0


def test_the_json_says_whether_the_audit_flushed(tmp_path: Path) -> None:
    import json

    path = tmp_path / "model.onnx"
    path.write_bytes(models.subnormal_weights().SerializeToString())
    for flag, flushed in (([], False), (["--flush-subnormals"], True)):
        out = tmp_path / "audit.json"
        result = CliRunner().invoke(main, ["audit", str(path), "--samples", "2", "--gradients", "fd", "--json", str(out), *flag])
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["model"]["subnormal_weights"] == {"count": 3, "total": 12, "flushed": flushed}
