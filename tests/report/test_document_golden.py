"""Golden test of the JSON document of a real audit (the sample MLP on six digits).

The golden file pins field names and values; volatile fields (versions, times, paths, platform)
are normalised first, and floats are compared with a tolerance that absorbs float32 differences
between CPUs. Fields may be *added* without touching the golden file (the schema allows it);
removing or renaming one, or changing a value, fails. After an intended change, regenerate with

    FIMAUDIT_UPDATE_GOLDEN=1 python -m pytest tests/report/test_document_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from fimaudit.report.document import SCHEMA_VERSION, build_document
from fimaudit.report.writing import json_text
from tests.report.helpers import audit_mlp

GOLDEN = Path(__file__).parent / "golden" / "mlp_audit.json"
RELATIVE, ABSOLUTE = 2e-3, 1e-7
VOLATILE = "<normalised>"


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """Replace what changes between machines and runs; keep every key."""
    document = json.loads(json_text(document))
    document["created_at"] = VOLATILE
    document["tool"]["version"] = VOLATILE
    document["environment"] = {key: VOLATILE for key in document["environment"]}
    document["model"]["path"] = Path(document["model"]["path"]).name
    document["method"]["seconds"] = VOLATILE
    cost = document["method"].get("gradient_settings", {}).get("fd_cost")
    if cost:  # timed on this machine (fisher/fd_cost.py)
        cost["seconds_per_evaluation"] = cost["expected_seconds"] = VOLATILE
    for sample in document["samples"]:
        sample["seconds"] = VOLATILE
    if isinstance(document.get("dataset"), dict) and "seconds" in document["dataset"].get("summary", {}):
        document["dataset"]["summary"]["seconds"] = VOLATILE
    if isinstance(document.get("bound"), dict) and "seconds" in document["bound"]:
        document["bound"]["seconds"] = VOLATILE
    return document


def mismatches(golden: Any, actual: Any, where: str = "$") -> list[str]:
    """Differences of ``actual`` from ``golden``; keys only in ``actual`` are allowed."""
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        found = []
        for key, value in golden.items():
            if key not in actual:
                found.append(f"{where}.{key}: missing")
            else:
                found += mismatches(value, actual[key], f"{where}.{key}")
        return found
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(actual) != len(golden):
            return [f"{where}: expected a list of {len(golden)}, got {actual!r}"]
        return [m for i, (g, a) in enumerate(zip(golden, actual)) for m in mismatches(g, a, f"{where}[{i}]")]
    if isinstance(golden, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if math.isclose(golden, actual, rel_tol=RELATIVE, abs_tol=ABSOLUTE):
            return []
        return [f"{where}: {actual!r} != golden {golden!r}"]
    if golden != actual or type(golden) is not type(actual):
        return [f"{where}: {actual!r} != golden {golden!r}"]
    return []


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return normalise(build_document(audit_mlp(samples=6, threshold=5.0)))


def test_document_matches_golden(document: dict[str, Any]) -> None:
    if os.environ.get("FIMAUDIT_UPDATE_GOLDEN"):
        GOLDEN.write_text(json_text(document))
    golden = json.loads(GOLDEN.read_text())
    found = mismatches(golden, document)
    assert not found, "JSON document differs from the golden file (see module doc to regenerate):\n" + "\n".join(found[:40])


def test_golden_comparison_catches_renames_and_changed_values(document: dict[str, Any]) -> None:
    renamed = json.loads(json.dumps(document))
    renamed["summary"]["p_95"] = renamed["summary"].pop("p95")
    assert mismatches(document, renamed) == ["$.summary.p95: missing"]
    changed = json.loads(json.dumps(document))
    changed["samples"][0]["lambda_max"] *= 1.01
    assert len(mismatches(document, changed)) == 1
    added = json.loads(json.dumps(document))
    added["a_future_section"] = {"per_layer": []}
    assert mismatches(document, added) == []


def test_contract_fields_of_the_foundation(document: dict[str, Any]) -> None:
    """The names the foundation promised (issue 2, item 8) are all present."""
    assert document["schema_version"] == SCHEMA_VERSION == 1
    assert set(document["tool"]) >= {"name", "version"}
    assert set(document["model"]) >= {"path", "sha256", "producer", "opset", "input", "output"}
    assert set(document["model"]["input"]) >= {"name", "shape", "dtype"}
    assert set(document["model"]["output"]) >= {"name", "kind"}
    assert "family" in document["architecture"]
    assert set(document["method"]) >= {"estimator", "gradients", "budget", "seed", "provider"}
    for entry in document["samples"]:
        assert set(entry) >= {"index", "lambda_max", "kind", "interval", "trace", "top_prob", "predicted_class"}
    assert set(document["summary"]) >= {"count", "max", "mean", "median", "p95"}
    assert "bound" in document and "gradient_check" in document
    assert set(document["verdict"]) >= {"threshold", "passed", "status", "reason"}
    assert [c["name"] for c in document["checks"]] == ["gradient_check", "convergence", "bound_check"]
    assert document["limitations"]


def test_readme_documents_every_top_level_field(document: dict[str, Any]) -> None:
    """The README's "The JSON document" section names every top-level field, and its example parses."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The JSON document"):]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert example["schema_version"] == document["schema_version"]
    undocumented = [key for key in document if f"`{key}" not in section]
    assert not undocumented, f"add these fields to the README's JSON section: {undocumented}"
    assert set(example) == set(document), "the README example shows every top-level field"
