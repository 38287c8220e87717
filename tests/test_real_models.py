"""Models from exporters other than PyTorch (tests/models/, see its README): the CLI works on
them, and gradient graphs agree with finite differences wherever they can be built.

Why: skl2onnx's ZipMap outputs, ai.onnx.ml operators and paddle2onnx's opset-11 graphs
(Clip with inputs, HardSigmoid, Constant nodes everywhere) are what users will bring; the
sample models come from PyTorch only. A file that is absent (not rebuilt) is skipped.

Tolerances: the Jacobians are compared in the Frobenius norm, relative, and lambda_max
relative. Measured with fimaudit's float32 central differences (h = 1e-3 relative): the MLPs
agree within 3e-4 (J) and 2e-4 (lambda); the PaddleOCR network, full of ReLU, HardSwish and
MaxPool kinks that central differences straddle, within 1.5e-2 and 1.6e-3. On the torchvision
corpus, where a float64 PyTorch reference exists (benchmarks/corpus_agreement.py), the gradient
graph is within 2e-6 of it and the finite differences are the ones that err by 1e-2 to 7e-2, so
the kinked model's looser tolerance is the differences' error, not the graph's. A wrong rule, a
wrong sign or a lost term shows as an error of order one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.gradients import make_source
from fimaudit.autodiff.build import missing_rules
from fimaudit.cli import main
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.graph.selection import LOGITS

MODELS = Path(__file__).resolve().parent / "models"
# (Frobenius J, lambda) relative tolerances; see the module doc.
TOLERANCES = {"ppocr_text_direction_cls.onnx": (5e-2, 1e-2)}
DEFAULT_TOLERANCE = (5e-3, 2e-3)
AGREEMENT_SAMPLES = 2


def _entries() -> list[dict]:
    manifest = MODELS / "manifest.json"
    return json.loads(manifest.read_text())["models"] if manifest.exists() else []


def _params(kind: str) -> list:
    wanted = [e for e in _entries() if (e["output"] == "zipmap") == (kind == "zipmap")]
    return [pytest.param(e, id=e["file"]) for e in wanted]


def _require(entry: dict) -> tuple[str, str]:
    model, data = MODELS / entry["file"], MODELS / entry["data"]
    if not model.exists() or not data.exists():
        pytest.skip(f"{entry['file']} not built (tests/models/build_models.py)")
    return str(model), str(data)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _audit_json(tmp_path: Path, model: str, data: str, gradients: str) -> tuple[int, str, dict | None]:
    out = tmp_path / f"{Path(model).stem}_{gradients}.json"
    result = invoke("audit", model, "--data", data, "--samples", "2", "--gradients", gradients, "--json", str(out))
    document = json.loads(out.read_text()) if out.exists() else None
    return result.exit_code, result.output, document


def test_the_manifest_lists_two_exporters_besides_pytorch() -> None:
    exporters = {entry["exporter"].split()[0] for entry in _entries()}
    if not exporters:
        pytest.skip("tests/models/manifest.json not built")
    assert {"skl2onnx", "paddle2onnx"} <= exporters


@pytest.mark.parametrize("entry", _params("tensor"))
def test_inspect_and_fd_audit_work(entry: dict, tmp_path: Path) -> None:
    model, data = _require(entry)
    shown = invoke("inspect", model)
    assert shown.exit_code == 0, shown.output
    assert "audit output:" in shown.output
    code, output, document = _audit_json(tmp_path, model, data, "fd")
    assert code == 0, output
    assert document is not None and document["method"]["gradients"] == "fd"
    values = [sample["lambda_max"] for sample in document["samples"]]
    assert len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values)
    # These models output probabilities: the logits are their logarithm (or the Softmax input).
    assert document["model"]["output"]["logits"] != "model output used as logits"


@pytest.mark.parametrize("entry", _params("zipmap"))
def test_zipmap_output_is_audited_through_a_tensor_or_explained(entry: dict, tmp_path: Path) -> None:
    """skl2onnx's default output is a sequence of maps: fimaudit picks a tensor or says what to do."""
    model, data = _require(entry)
    code, output, document = _audit_json(tmp_path, model, data, "fd")
    if code == 2:
        assert "zipmap" in output.lower(), output
        assert "\n" not in output.strip(), "one line on stderr"
        return
    assert code == 0, output
    twin = model.replace("_zipmap.onnx", "_tensor.onnx")
    _, _, reference = _audit_json(tmp_path, twin, data, "fd")
    assert document is not None and reference is not None
    got = [s["lambda_max"] for s in document["samples"]]
    want = [s["lambda_max"] for s in reference["samples"]]
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("entry", _params("tensor"))
def test_graph_gradients_agree_with_finite_differences_or_preflight_names_the_ops(entry: dict, tmp_path: Path) -> None:
    model, data = _require(entry)
    inputs = np.load(data)[:AGREEMENT_SAMPLES]
    prepared = prepare_model(intake(model), AuditConfig(model_path=model), inputs[:1])
    missing = sorted({op for op, _ in missing_rules(prepared.runner.model, prepared.runner.input_name, LOGITS, "vjp")})
    if missing:
        code, output, _ = _audit_json(tmp_path, model, data, "graph")
        assert code == 2
        assert all(op in output for op in missing), output
        code, output, document = _audit_json(tmp_path, model, data, "auto")
        assert code == 0, output
        assert document is not None and document["method"]["gradients"] == "fd"
        assert "fallback" in document["method"]["gradients_note"]
        return
    choice = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes)
    assert choice.kind == "graph"
    graph, fd = choice.source, make_source("fd", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    logits = graph.logits(inputs)
    exact, differenced = graph.dense(inputs), fd.dense(inputs)
    jacobian_tolerance, lambda_tolerance = TOLERANCES.get(entry["file"], DEFAULT_TOLERANCE)
    for index in range(inputs.shape[0]):
        scale = np.linalg.norm(differenced[index])
        assert scale > 0
        assert np.linalg.norm(exact[index] - differenced[index]) <= jacobian_tolerance * scale
        want = exact_lambda_max(differenced[index], logits[index]).value
        got = exact_lambda_max(exact[index], logits[index]).value
        assert abs(got - want) <= lambda_tolerance * want
