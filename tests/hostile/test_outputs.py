"""Outputs: checked before any computation, never half-written, never an input overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import fimaudit.audit
import fimaudit.report.outputs
import fimaudit.report.writing
from fimaudit.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
MLP, DIGITS = SAMPLES / "mlp.onnx", SAMPLES / "digits_test.npy"


def audit(tmp_path: Path, *extra: str):
    args = ["audit", str(MLP), "--data", str(DIGITS), "--samples", "2", "--gradients", "fd",
            "--json", str(tmp_path / "audit.json"), "--report", str(tmp_path / "audit.html"), *extra]
    return CliRunner().invoke(main, args)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_good_run_writes_both_files(tmp_path: Path) -> None:
    result = audit(tmp_path)
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path) == ["audit.html", "audit.json"]


def forbid_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the audit ran although an output path was bad")

    monkeypatch.setattr(fimaudit.audit, "run_audit", fail)


@pytest.mark.parametrize(
    "make_path",
    [
        lambda tmp: tmp / "missing" / "audit.json",
        lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "audit.json",
        lambda tmp: (tmp / "folder").mkdir() or tmp / "folder",
    ],
    ids=["missing-folder", "under-a-file", "a-folder"],
)
def test_bad_output_path_is_refused_before_the_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_path) -> None:
    forbid_computation(monkeypatch)
    bad = make_path(tmp_path)
    result = CliRunner().invoke(main, ["audit", str(MLP), "--data", str(DIGITS), "--json", str(bad)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("fimaudit: error: ")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0500")
def test_read_only_folder_is_refused_before_the_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = CliRunner().invoke(main, ["audit", str(MLP), "--json", str(folder / "audit.json")])
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 2
    assert "not writable" in result.stderr


@pytest.mark.parametrize("option", ["--json", "--report"])
def test_an_input_is_never_an_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str) -> None:
    forbid_computation(monkeypatch)
    model = tmp_path / "model.onnx"
    model.write_bytes(MLP.read_bytes())
    result = CliRunner().invoke(main, ["audit", str(model), option, str(tmp_path / "." / "model.onnx")])
    assert result.exit_code == 2
    assert "it is an input of this run" in result.stderr
    assert model.read_bytes() == MLP.read_bytes()


def test_two_outputs_may_not_share_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    same = str(tmp_path / "out")
    result = CliRunner().invoke(main, ["audit", str(MLP), "--json", same, "--report", same])
    assert result.exit_code == 2
    assert "another output" in result.stderr


def test_failure_during_the_audit_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fimaudit.audit.run_audit

    def fail_after_first_sample(config, progress=None, **hooks):
        def progress_then_fail(done: int, total: int) -> None:
            raise RuntimeError("simulated crash in the middle of the audit")

        return real(config, progress=progress_then_fail, **hooks)

    monkeypatch.setattr(fimaudit.audit, "run_audit", fail_after_first_sample)
    result = audit(tmp_path)
    assert result.exit_code == 2
    assert "simulated crash" in result.stderr
    assert files_in(tmp_path) == []


def test_interrupted_audit_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(config, progress=None, **hooks):
        raise KeyboardInterrupt

    monkeypatch.setattr(fimaudit.audit, "run_audit", interrupted)
    result = audit(tmp_path)
    assert result.exit_code == 130
    assert files_in(tmp_path) == []


def test_failure_while_rendering_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_template(*args, **kwargs):
        raise RuntimeError("simulated template failure")

    monkeypatch.setattr(fimaudit.report.outputs, "html_report", broken_template)
    result = audit(tmp_path)
    assert result.exit_code == 2
    assert files_in(tmp_path) == [], "the JSON must not be written when the HTML cannot be rendered"


def test_failure_while_writing_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fimaudit.report.writing.os, "fsync", disk_full)
    result = audit(tmp_path)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "No space left on device" in result.output and "internal error" not in result.output
    assert files_in(tmp_path) == []
