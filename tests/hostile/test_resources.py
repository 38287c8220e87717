"""The memory budget: sizes parsed, needs refused up front, batches shrunk to fit, results unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.cli import main
from fimaudit.errors import ResourceError
from fimaudit.resources import MemoryBudget, MemoryNeeds, activation_bytes_per_row, format_size, parse_size, plan_memory
from fimaudit.runtime import ModelRunner
from tests.hostile import models

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("1K", 1024), ("64k", 65536), ("2M", 2 << 20), ("1.5G", 3 << 29), ("2GiB", 2 << 30), ("1 TB", 1 << 40), (".5k", 512)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "0.1", "1Q", "1e9", "G", "nan"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 << 30) == "3.0 GiB"


def test_plan_refuses_with_the_size_it_needs() -> None:
    needs = MemoryNeeds(held={"weights": 1000, "Jacobian": 500}, per_row=100, min_rows=2)
    with pytest.raises(ResourceError, match=r"needs at least 1.7 KiB \(weights 1000 B, Jacobian 500 B, a batch of 2 rows 200 B\)"):
        plan_memory(needs, MemoryBudget(1600, "--max-memory is 1.6 KiB"), preferred_rows=512)


@pytest.mark.parametrize(("limit", "rows"), [(1700, 2), (1500 + 100 * 37, 36), (10**9, 512)])
def test_plan_shrinks_batches_to_fit(limit: int, rows: int) -> None:
    needs = MemoryNeeds(held={"weights": 1000, "Jacobian": 500}, per_row=100, min_rows=2)
    plan = plan_memory(needs, MemoryBudget(limit, "test"), preferred_rows=512)
    assert plan.batch_rows == rows
    assert sum(needs.held.values()) + plan.batch_rows * needs.per_row <= limit


def test_activation_estimate_counts_per_row_tensors() -> None:
    model = models.linear(features=4, classes=3)
    # the only tensor with a batch axis is the output: 3 float32 per row
    assert activation_bytes_per_row(model) == 12


def _rows_per_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = ModelRunner.run

    def recording(self, rows):
        seen.append(int(rows.shape[0]))
        return real(self, rows)

    monkeypatch.setattr(ModelRunner, "run", recording)
    return seen


def test_max_memory_is_honoured_by_smaller_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """vgg_small, d = 64: finite differences want 128 rows per sample; a small budget splits them."""
    base = AuditConfig(
        model_path=str(SAMPLES / "vgg_small.onnx"), data_path=str(SAMPLES / "digits_test.npy"),
        samples=2, gradients="fd",
    )
    free = run_audit(base)
    seen = _rows_per_run(monkeypatch)
    limit = 600 << 10
    tight = run_audit(AuditConfig(**{**base.__dict__, "max_memory": limit}))
    input_row = 64 * 4
    assert max(seen) < 128, "the budget did not shrink the batches"
    assert max(seen) * 3 * input_row <= limit
    assert tight.model_evaluations == free.model_evaluations
    np.testing.assert_allclose(
        [s.result.value for s in tight.samples], [s.result.value for s in free.samples], rtol=1e-5
    )


def test_cli_refuses_a_budget_too_small_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _rows_per_run(monkeypatch)
    result = CliRunner().invoke(
        main, ["audit", str(SAMPLES / "vgg_small.onnx"), "--samples", "2", "--gradients", "fd", "--max-memory", "20K"]
    )
    assert result.exit_code == 2
    match = re.search(r"(?:needs at least|would need) ([\d.]+) KiB .* --max-memory is 20\.0 KiB", result.stderr)
    assert match and float(match.group(1)) > 20, result.stderr
    assert len(seen) <= 2, "the long computation started before the refusal"


def test_max_memory_is_honoured_by_gradient_graphs() -> None:
    """The planned batch also bounds the rows (classes x samples) of each gradient-graph run."""
    base = AuditConfig(
        model_path=str(SAMPLES / "vgg_small.onnx"), data_path=str(SAMPLES / "digits_test.npy"),
        samples=2, gradients="graph",
    )
    free = run_audit(base)
    tight = run_audit(AuditConfig(**{**base.__dict__, "max_memory": 300 << 10}))
    assert tight.gradients == free.gradients == "graph"
    assert tight.prepared.runner.accounting.runs > free.prepared.runner.accounting.runs
    np.testing.assert_allclose(
        [s.result.value for s in tight.samples], [s.result.value for s in free.samples], rtol=1e-6
    )
