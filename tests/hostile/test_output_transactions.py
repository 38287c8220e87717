"""Outputs never destroy inputs, never replace special files, and appear all together or not at all.

Through the command line (CliRunner) where possible. A full disk is the kernel's own EFBIG under
``RLIMIT_FSIZE`` (SIGXFSZ ignored) in a child process; SIGTERM in the middle of writing is sent to
a child process paused inside the write phase by a hook its script installs.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fimaudit.audit
import fimaudit.report.writing
from fimaudit.cli import main
from fimaudit.errors import OutputPathError
from fimaudit.report.writing import OutputSet
from tests.hostile import models

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
MLP, DIGITS = SAMPLES / "mlp.onnx", SAMPLES / "digits_test.npy"
FAST = ["--samples", "2", "--no-bounds"]


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fimaudit: error: ") and "Traceback" not in stderr
    assert "internal error" not in lines[0], "an OSError escaped as an internal error"
    return lines[0]


@pytest.fixture
def external(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A model whose weight lives in model/weights.bin, and data for it: (model, weights, data)."""
    folder = tmp_path / "model"
    folder.mkdir()
    rng = np.random.default_rng(0)
    weights = folder / "weights.bin"
    weights.write_bytes(rng.standard_normal((4, 3)).astype(np.float32).tobytes())
    model = folder / "model.onnx"
    model.write_bytes(models.with_external_weight("weights.bin").SerializeToString())
    data = tmp_path / "x.npy"
    np.save(data, rng.standard_normal((2, 4)).astype(np.float32))
    return model, weights, data


# --- outputs never replace an input --------------------------------------------------------------


@pytest.mark.parametrize("option", ["--json", "--report", "--summary"])
def test_audit_output_over_external_weights_is_refused(external, option: str) -> None:
    model, weights, data = external
    before = weights.read_bytes()
    result = CliRunner().invoke(main, ["audit", str(model), "--data", str(data), *FAST, option, str(weights)])
    assert result.exit_code == 2, result.output
    assert "it is an input of this run" in one_error_line(result.stderr)
    assert weights.read_bytes() == before
    assert files_in(weights.parent) == ["model.onnx", "weights.bin"], "a temporary file stayed behind"


def test_audit_output_over_external_weights_writes_no_other_output(external, tmp_path: Path) -> None:
    """The refusal comes before anything is written: the JSON asked for alongside does not appear."""
    model, weights, data = external
    before = weights.read_bytes()
    result = CliRunner().invoke(main, ["audit", str(model), "--data", str(data), *FAST,
                                       "--json", str(tmp_path / "a.json"), "--report", str(weights)])
    assert result.exit_code == 2, result.output
    assert weights.read_bytes() == before
    assert not (tmp_path / "a.json").exists()


def test_output_over_external_weights_is_refused_before_the_data_is_read(
    external, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked again as soon as the loader has found weights.bin: nothing is computed first."""
    model, weights, data = external

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read although an output is one of the model's files")

    monkeypatch.setattr(fimaudit.audit, "load_data", no_data)  # audit and jacobian both read data there
    for command in (["audit", str(model), "--data", str(data), "--json", str(weights)],
                    ["jacobian", str(model), "--data", str(data), "--out", str(weights)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert "it is an input of this run" in one_error_line(result.stderr)


def test_jacobian_out_over_external_weights_is_refused(external) -> None:
    model, weights, data = external
    before = weights.read_bytes()
    result = CliRunner().invoke(main, ["jacobian", str(model), "--data", str(data), "--out", str(weights)])
    assert result.exit_code == 2, result.output
    assert "it is an input of this run" in one_error_line(result.stderr)
    assert weights.read_bytes() == before
    assert files_in(weights.parent) == ["model.onnx", "weights.bin"]


def test_inspect_json_over_external_weights_is_refused(external) -> None:
    model, weights, _ = external
    before = weights.read_bytes()
    result = CliRunner().invoke(main, ["inspect", str(model), "--json", str(weights)])
    assert result.exit_code == 2, result.output
    assert weights.read_bytes() == before


def test_compare_output_over_external_weights_is_refused(external, tmp_path: Path) -> None:
    model, weights, data = external
    copy = tmp_path / "other.onnx"
    copy.write_bytes(models.linear().SerializeToString())
    before = weights.read_bytes()
    result = CliRunner().invoke(main, ["compare", str(model), str(copy), "--data", str(data), *FAST,
                                       "--json", str(weights)])
    assert result.exit_code == 2, result.output
    assert weights.read_bytes() == before


def test_output_is_a_hard_link_to_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    data = tmp_path / "digits.npy"
    data.write_bytes(DIGITS.read_bytes())
    link = tmp_path / "report.html"
    os.link(data, link)
    result = CliRunner().invoke(main, ["audit", str(MLP), "--data", str(data), "--report", str(link)])
    assert result.exit_code == 2, result.output
    assert f"it is an input of this run ({data})" in one_error_line(result.stderr)
    assert data.read_bytes() == DIGITS.read_bytes()


def test_output_is_a_symlink_to_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    model = tmp_path / "model.onnx"
    model.write_bytes(MLP.read_bytes())
    link = tmp_path / "audit.json"
    link.symlink_to(model)
    result = CliRunner().invoke(main, ["audit", str(model), "--json", str(link)])
    assert result.exit_code == 2, result.output
    assert "symbolic link" in one_error_line(result.stderr)
    assert link.is_symlink() and model.read_bytes() == MLP.read_bytes()


def test_output_is_a_symlink_to_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any symlink: fimaudit neither writes through it nor replaces it (the target is untouched)."""
    forbid_computation(monkeypatch)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "audit.json"
    link.symlink_to(target)
    result = CliRunner().invoke(main, ["audit", str(MLP), "--json", str(link)])
    assert result.exit_code == 2
    assert "symbolic link" in result.stderr
    assert target.read_text() == "keep me" and link.is_symlink()


# --- outputs never replace special files ---------------------------------------------------------


def forbid_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the audit ran although an output path was bad")

    monkeypatch.setattr(fimaudit.audit, "run_audit", fail)


@pytest.fixture
def fifo(tmp_path: Path):
    """A FIFO with a non-blocking reader: a writer that opened it would not hang the test."""
    path = tmp_path / "audit.json"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, reader
    os.close(reader)


def assert_fifo_untouched(path: Path, reader: int) -> None:
    assert stat.S_ISFIFO(os.lstat(path).st_mode), "the FIFO was replaced"
    try:
        written = os.read(reader, 1024)
    except BlockingIOError:
        written = b""
    assert written == b"", "fimaudit wrote into the FIFO"


def test_fifo_output_is_refused_before_the_audit(fifo, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    path, reader = fifo
    result = CliRunner().invoke(main, ["audit", str(MLP), "--json", str(path)])
    assert result.exit_code == 2
    assert "FIFO" in one_error_line(result.stderr)
    assert_fifo_untouched(path, reader)


def test_fifo_appearing_during_the_audit_is_refused_at_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit checks again: a FIFO made while the audit ran is neither opened nor replaced."""
    path = tmp_path / "audit.json"
    real = fimaudit.audit.run_audit
    reader: list[int] = []

    def audit_then_make_fifo(config, progress=None, **hooks):
        result = real(config, progress=progress, **hooks)
        os.mkfifo(path)
        reader.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        return result

    monkeypatch.setattr(fimaudit.audit, "run_audit", audit_then_make_fifo)
    try:
        result = CliRunner().invoke(main, ["audit", str(MLP), "--data", str(DIGITS), *FAST,
                                           "--json", str(path), "--report", str(tmp_path / "audit.html")])
        assert result.exit_code == 2, result.output
        assert "FIFO" in one_error_line(result.stderr)
        assert_fifo_untouched(path, reader[0])
        assert files_in(tmp_path) == ["audit.json"], "the report appeared without its JSON, or a temporary stayed"
    finally:
        for handle in reader:
            os.close(handle)


@pytest.mark.parametrize("how", ["device", "symlink-to-device"])
def test_dev_null_output_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    forbid_computation(monkeypatch)
    if how == "device":
        path = Path(os.devnull)
    else:
        path = tmp_path / "audit.json"
        path.symlink_to(os.devnull)
    result = CliRunner().invoke(main, ["audit", str(MLP), "--json", str(path)])
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert ("character device" if how == "device" else "symbolic link") in line
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_two_outputs_naming_one_file_through_a_hard_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    first = tmp_path / "a.json"
    first.write_text("old")
    os.link(first, tmp_path / "b.html")
    result = CliRunner().invoke(main, ["audit", str(MLP), "--json", str(first), "--report", str(tmp_path / "b.html")])
    assert result.exit_code == 2
    assert "another output" in one_error_line(result.stderr)


def test_two_outputs_naming_one_file_through_a_symlinked_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_computation(monkeypatch)
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    result = CliRunner().invoke(main, ["audit", str(MLP), "--json", str(tmp_path / "real" / "out"),
                                       "--summary", str(tmp_path / "alias" / "out")])
    assert result.exit_code == 2
    assert "another output" in one_error_line(result.stderr)


# --- all outputs or none -------------------------------------------------------------------------


def audit_args(folder: Path) -> list[str]:
    return ["audit", str(MLP), "--data", str(DIGITS), *FAST,
            "--json", str(folder / "audit.json"), "--report", str(folder / "audit.html")]


def test_disk_full_after_the_first_file_leaves_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "audit.html").write_text("old report")
    real_fdopen = os.fdopen
    opened: list[int] = []

    class FullDisk(io.BufferedWriter):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_after_first_file(handle, mode="r", *args, **kwargs):
        opened.append(handle)
        if len(opened) == 1:
            return real_fdopen(handle, mode, *args, **kwargs)
        return FullDisk(io.FileIO(handle, "wb"))

    monkeypatch.setattr(fimaudit.report.writing.os, "fdopen", full_after_first_file)
    result = CliRunner().invoke(main, audit_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert "No space left on device" in one_error_line(result.stderr)
    assert len(opened) == 2, "the JSON is written first, then the report fails"
    assert files_in(tmp_path) == ["audit.html"]
    assert (tmp_path / "audit.html").read_text() == "old report"


def test_rename_failing_midway_puts_back_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "audit.json").write_text("old json")
    real_replace = os.replace
    renames: list[str] = []

    def fail_second_rename(source, target):
        if str(source).endswith(".tmp"):
            renames.append(str(target))
            if len(renames) == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(source, target)

    monkeypatch.setattr(fimaudit.report.writing.os, "replace", fail_second_rename)
    result = CliRunner().invoke(main, audit_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert "Input/output error" in one_error_line(result.stderr)
    assert len(renames) == 2, "the first output must have been renamed into place before the failure"
    assert files_in(tmp_path) == ["audit.json"]
    assert (tmp_path / "audit.json").read_text() == "old json"


def test_a_good_run_replaces_old_files_and_leaves_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "audit.json").write_text("old json")
    old = os.umask(0o027)
    try:
        result = CliRunner().invoke(main, [*audit_args(tmp_path), "--summary", str(tmp_path / "audit.md")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path) == ["audit.html", "audit.json", "audit.md"]
    assert (tmp_path / "audit.json").read_text().startswith("{")
    assert stat.S_IMODE(os.stat(tmp_path / "audit.md").st_mode) == 0o640, "the umask decides the mode"


def test_output_set_refuses_an_undeclared_or_missing_output(tmp_path: Path) -> None:
    with OutputSet([tmp_path / "a"]) as outputs:
        with pytest.raises(ValueError):
            outputs.stage(tmp_path / "b")
        with pytest.raises(ValueError, match="never written"):
            outputs.commit()
    assert files_in(tmp_path) == []


def test_output_set_checks_inputs_found_at_commit(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"weights")
    with OutputSet([weights]) as outputs:
        outputs.check()  # the loader has not said yet that weights.bin is read
        outputs.write(weights, "report")
        with pytest.raises(OutputPathError, match="input of this run"):
            outputs.commit([weights])
    assert weights.read_bytes() == b"weights"
    assert files_in(tmp_path) == ["weights.bin"]


# --- child processes: a real file-size limit, a real SIGTERM -------------------------------------

CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys, time
    mode, arguments = sys.argv[1], sys.argv[2:]
    import fimaudit.report.writing as writing
    from fimaudit.cli import main

    if mode.startswith("fsize="):
        limit = int(mode.split("=")[1])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel's EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    elif mode.startswith("pause="):  # pause inside the write phase until the parent's SIGTERM
        marker = mode.split("=", 1)[1]
        finish = writing.StagedFile.finish
        def paused_finish(self):
            finish(self)
            open(marker, "w").close()
            time.sleep(60)
        writing.StagedFile.finish = paused_finish
    elif mode == "signal-during-rename":  # SIGTERM arrives as the first output is renamed into place
        replace = os.replace
        def signalled_replace(source, target):
            if str(source).endswith(".tmp"):
                os.kill(os.getpid(), signal.SIGTERM)
            return replace(source, target)
        os.replace = signalled_replace
    sys.argv = ["fimaudit", *arguments]
    main()
    """
)


def run_child(tmp_path: Path, mode: str, arguments: list[str], **kwargs) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(script), mode, *arguments], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_file_size_limit_during_the_report_leaves_no_new_file(tmp_path: Path) -> None:
    """EFBIG from the kernel on the HTML report (the JSON, 7 kB, fits under the 12 kB limit)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "audit.html").write_text("old report")
    child = run_child(tmp_path, "fsize=12000", audit_args(out))
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr
    assert "File too large" in one_error_line(stderr)
    assert files_in(out) == ["audit.html"]
    assert (out / "audit.html").read_text() == "old report"


def test_file_size_limit_during_jacobian_leaves_no_file(tmp_path: Path) -> None:
    """2 samples x 10 classes x 64 pixels x 4 bytes = 5 kB over a 4 kB limit: EFBIG mid-file, no SIGBUS."""
    out = tmp_path / "out"
    out.mkdir()
    child = run_child(tmp_path, "fsize=4096", ["jacobian", str(MLP), "--data", str(DIGITS), "--samples", "2",
                                                "--out", str(out / "J.npy")])
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr
    assert "File too large" in one_error_line(stderr)
    assert files_in(out) == []


def test_sigterm_while_writing_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "paused"
    child = run_child(tmp_path, f"pause={marker}", audit_args(out))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached the write phase"
            time.sleep(0.05)
        assert any(name.endswith(".tmp") for name in files_in(out)), "paused before any temporary was written"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    assert files_in(out) == []


def test_sigterm_during_the_renames_writes_nothing(tmp_path: Path) -> None:
    """A stop signal that comes in while the outputs are renamed into place is held back until
    the renames are undone: exit 143, no new file, the old file as it was (ONNX Runtime's threads
    are running, so a thread signal mask alone would not hold a process-directed SIGTERM back)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "audit.json").write_text("old json")
    child = run_child(tmp_path, "signal-during-rename", audit_args(out))
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert files_in(out) == ["audit.json"]
    assert (out / "audit.json").read_text() == "old json"
