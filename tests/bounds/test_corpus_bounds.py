"""Bounds on the torchvision corpus (both PyTorch exporters) against PyTorch's float64 lambda_max.

tools/corpus/torch_reference.py stores, per architecture, float64 autograd Jacobians and logits
for the corpus inputs: exact_lambda_max of those is the true lambda_max to ~1e-12. The
per-sample and global bounds must be above it on every sample, without tolerance, and both
exporters' graphs must give the same global bound (the same function, bounded the same way).
Skipped when the corpus (or a model's reference) is absent, and for files over 200 MB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.bounds.fisher_bound import FisherBounds
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.graph.selection import LOGITS

CORPUS = Path(os.environ.get("FIMAUDIT_CORPUS", "/work/corpus"))
SAMPLES_CHECKED = 3
_GLOBAL: dict[str, list[float | None]] = {}


def _entries() -> list[dict]:
    manifest = CORPUS / "manifest.json"
    if not manifest.is_file():
        return []
    document = json.loads(manifest.read_text())
    shape = document["inputs"]["shape"][1:]
    return [
        e for e in document["models"]
        if (CORPUS / e["file"]).is_file() and (CORPUS / f"reference_{e['arch']}.npz").is_file()
        and list(e["input_shape"][1:]) == list(shape) and e.get("file_size", 0) <= 200 << 20
    ]


@pytest.mark.slow
@pytest.mark.skipif(not _entries(), reason=f"no corpus with float64 references at {CORPUS}")
@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e["file"])
def test_corpus_bounds_are_above_the_float64_lambda_max(entry: dict) -> None:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    inputs = np.load(CORPUS / manifest["inputs"]["file"])
    reference = np.load(CORPUS / f"reference_{entry['arch']}.npz")
    path = str(CORPUS / entry["file"])
    taken = intake(path)
    prepared = prepare_model(taken, AuditConfig(model_path=path), inputs[:1])
    bounds = FisherBounds(prepared.logits_model, taken.selection.input_name, LOGITS, inputs.shape[1:], prepared.num_classes)
    bounds.learn_shapes(inputs[0])
    result = bounds.global_bound()
    _GLOBAL.setdefault(entry["arch"], []).append(result.value)
    for index in range(SAMPLES_CHECKED):
        exact = exact_lambda_max(reference["jacobians"][index], reference["logits"][index], with_eigenvector=False).value
        logits = prepared.runner.run(inputs[index : index + 1])[0][0]
        sample = bounds.sample_bound(inputs[index], logits, exact)
        assert sample.value is not None, sample.reason
        assert sample.value >= exact
        if result.value is not None:
            assert result.value >= exact
    if entry["arch"].startswith("mobilenet"):
        assert result.value is None and "bounded input domain" in result.reason
    else:
        assert result.value is not None, result.reason
    values = _GLOBAL[entry["arch"]]
    if len(values) == 2 and None not in values:
        assert values[0] == pytest.approx(values[1], rel=1e-4), "both exporters' graphs give the same bound"
