"""The corpus's kept files are what their build script makes (checked where skl2onnx is installed)."""

from __future__ import annotations

import pytest

from tests.hostile.models import build_zipmap_model, zipmap_model


def test_kept_zipmap_model_has_a_zipmap_output() -> None:
    model = zipmap_model()
    assert [node.op_type for node in model.graph.node][-1] == "ZipMap"
    assert model.graph.output[1].type.WhichOneof("value") == "sequence_type"


def test_kept_zipmap_model_matches_a_fresh_conversion() -> None:
    pytest.importorskip("skl2onnx")
    pytest.importorskip("sklearn")
    fresh, kept = build_zipmap_model(), zipmap_model()
    fresh.producer_version = ""
    assert fresh.graph == kept.graph
