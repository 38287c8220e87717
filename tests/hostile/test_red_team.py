"""A red-team pass over SECURITY.md's guarantees: the attacks that broke something, and new ground.

Broke (fixed with these tests):

- an external-data offset of thousands of digits was an internal error (``int()`` refuses more
  than 4300 digits), not a one-line refusal;
- a folder on the way to an external-data file swapped for a symlink between the check and the
  read made the loader *open* the file outside the model's folder (the identity check then
  refused it unread); every component is now opened without following symlinks;
- a model file holding its weights inline was read and parsed (three copies of it) before the
  weights were planned: a 190 MiB file under ``--max-memory 64M`` peaked at three times its size;
- ``fimaudit inspect`` planned no memory at all: it read external weights of any size;
- the one-line results on stdout (audit's summary, compare's ranking and pairs, jacobian's line)
  printed file names raw: a model file named with terminal escapes (a glob over an untrusted
  archive) reached the terminal as control.

Held (kept where no other test covered it): an output whose folder is a symlink into the model's
folder, named as the external weights; a compressed ``.npz`` member that inflates far beyond what
its header declares; a hard link inside the model's folder (allowed by design, SECURITY.md).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from fimaudit.cli import main
from fimaudit.errors import ModelError
from fimaudit.graph import loader
from tests.hostile import models
from tests.hostile.open_watch import OpenWatch
from tests.hostile.test_memory_limits import _run_measured

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and /proc are Linux-only here")

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "sample_models" / "mlp.onnx"
WEIGHTS = np.arange(12, dtype=np.float32).tobytes()
PAYLOAD = "\x1b]0;pwned\x07\x1b[31m\u202e"
FORBIDDEN = [b"\x1b", b"\x07", "\u202e".encode()]


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fimaudit: error: "), result.stderr
    assert pattern in lines[0], lines[0]


def _external_model(folder: Path, location: str, **entries: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = models.with_external_weight(location)
    for entry in model.graph.initializer[0].external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# --- broke: external-data references ------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "entries", "message"),
    [
        ("w.bin", {"offset": "9" * 5000}, "external data offset of 5000 digits; no file is that large"),
        ("w.bin", {"length": "1" + "0" * 4400}, "external data length of 4401 digits"),
        ("./", {}, "names the model's folder itself ('./') as external data"),
    ],
    ids=["offset-5000-digits", "length-4401-digits", "the-folder-itself"],
)
def test_absurd_external_reference_is_one_line(tmp_path: Path, location: str, entries: dict, message: str) -> None:
    (tmp_path / "w.bin").write_bytes(WEIGHTS)
    result = CliRunner().invoke(main, ["inspect", str(_external_model(tmp_path, location, **entries))])
    _one_line_error(result, message)


def test_folder_swapped_for_a_symlink_after_the_check_opens_nothing_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOCTOU: ``sub/`` is checked, then replaced by a symlink to a folder outside before the read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(WEIGHTS)
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(WEIGHTS)
    path = _external_model(folder, "sub/w.bin")
    read = loader._read_data_file

    def swap_then_read(data):
        shutil.rmtree(folder / "sub")
        os.symlink(outside, folder / "sub")
        return read(data)

    monkeypatch.setattr(loader, "_read_data_file", swap_then_read)
    watch = OpenWatch(outside / "w.bin")
    try:
        watch.events()
        with pytest.raises(ModelError, match="cannot open external data file 'sub/w.bin'"):
            loader.load_model(path)
        assert watch.events() == 0, "the file outside the model's folder was opened"
    finally:
        watch.close()


def test_external_data_in_a_real_subfolder_still_loads(tmp_path: Path) -> None:
    """Control for the component-wise open: a nested location inside the folder reads as before."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "w.bin").write_bytes(WEIGHTS)
    loaded = loader.load_model(_external_model(tmp_path, "a/b/w.bin"))
    assert loaded.external_data_files == ["a/b/w.bin"]
    assert numpy_helper.to_array(loaded.graph.initializer[0]).tobytes() == WEIGHTS


# --- broke: the memory budget ---------------------------------------------------------------------


def test_inline_weights_are_refused_before_the_model_file_is_read(tmp_path: Path) -> None:
    model = models.linear()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(50_000_000, np.float32), "unused"))
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    del model
    size = path.stat().st_size
    for command in (["audit", str(path), "--samples", "2"], ["inspect", str(path)]):
        code, stderr, peak = _run_measured([*command, "--max-memory", "64M"])
        assert code == 2, stderr
        assert stderr.strip().splitlines() == [stderr.strip()]
        assert "reading the model file model.onnx (190.7 MiB) needs at least 572.2 MiB (3 copies)" in stderr
        assert peak < size, f"{command[0]} peaked at {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"


def test_inspect_plans_the_external_weights_and_reads_none(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    with weights.open("wb") as stream:
        stream.truncate(64 << 20)  # sparse: 64 MiB declared, nothing on the disk
    path = tmp_path / "model.onnx"
    path.write_bytes(models.declared_external("w.bin", 16 << 20).SerializeToString())
    watch = OpenWatch(weights)
    try:
        result = CliRunner().invoke(main, ["inspect", str(path), "--max-memory", "32M"])
        _one_line_error(result, "needs at least 192.0 MiB for its weights (3 copies of 64.0 MiB) but --max-memory")
        assert watch.events() == 0, "the external weights were opened before the plan refused them"
    finally:
        watch.close()
    result = CliRunner().invoke(main, ["inspect", str(path), "--max-memory", "1G"])
    assert result.exit_code == 0 and "external:    w.bin (67,108,864 bytes" in result.stdout, result.output


# --- broke: terminal output -----------------------------------------------------------------------


@pytest.fixture
def hostile_file_names(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two models whose file names (and names inside) carry escapes, and data for them."""
    first = tmp_path / f"a{PAYLOAD}.onnx"
    first.write_bytes(models.hostile_names(PAYLOAD).SerializeToString())
    second = tmp_path / f"b{PAYLOAD}.onnx"
    second.write_bytes(models.linear(seed=1).SerializeToString())
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    return first, second, data


@pytest.mark.parametrize("command", ["audit", "compare", "jacobian"])
def test_stdout_results_escape_file_names(hostile_file_names, tmp_path: Path, command: str) -> None:
    first, second, data = hostile_file_names
    args = {
        "audit": ["audit", str(first), "--data", str(data), "--no-bounds"],
        "compare": ["compare", str(first), str(second), "--data", str(data), "--no-bounds"],
        "jacobian": ["jacobian", str(first), "--data", str(data), "--out", str(tmp_path / f"J{PAYLOAD}.npy")],
    }[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1), result.output
    assert [item for item in FORBIDDEN if item in result.stdout_bytes + result.stderr_bytes] == []
    assert "\\x1b]0;pwned\\x07" in result.stdout  # shown, as text


# --- held: kept for coverage no other test has ------------------------------------------------------


def test_output_through_a_symlinked_folder_onto_the_external_weights(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    path = _external_model(folder, "w.bin")
    (folder / "w.bin").write_bytes(WEIGHTS)
    os.symlink(folder, tmp_path / "elsewhere")
    for option in ("--json", "--report", "--summary"):
        result = CliRunner().invoke(
            main, ["audit", str(path), "--samples", "2", "--no-bounds", option, str(tmp_path / "elsewhere" / "w.bin")]
        )
        _one_line_error(result, "it is an input of this run")
    assert (folder / "w.bin").read_bytes() == WEIGHTS


def test_compressed_npz_member_inflating_beyond_its_header_is_not_inflated(tmp_path: Path) -> None:
    """A 512 MiB deflate bomb behind a header declaring 2 x 8 x 8 floats: only the header's bytes are read."""
    header = io.BytesIO()
    np.lib.format.write_array(header, np.zeros((2, 1, 8, 8), np.float32))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("x.npy", "w") as member:
        member.write(header.getvalue())
        zeros = bytes(16 << 20)
        for _ in range(32):
            member.write(zeros)
    code, stderr, peak = _run_measured(["audit", str(MLP), "--data", str(bomb), "--no-bounds"])
    assert code in (0, 1), stderr
    assert peak < 400 << 20, f"peaked at {peak / 2**20:.0f} MiB"


def test_hard_link_inside_the_folder_is_inside(tmp_path: Path) -> None:
    """By design: a hard link in the model's folder is a file of that folder, whatever other names it has.

    Making one needs the right to the file already (protected_hardlinks); SECURITY.md says so.
    """
    (tmp_path / "secret.bin").write_bytes(WEIGHTS)
    folder = tmp_path / "model"
    folder.mkdir()
    os.link(tmp_path / "secret.bin", folder / "w.bin")
    loaded = loader.load_model(_external_model(folder, "w.bin"))
    assert loaded.external_data_files == ["w.bin"]


def test_unknown_protobuf_fields_never_reach_onnx_runtime(tmp_path) -> None:
    """A field this onnx does not know (here number 999 on a TensorProto, as a newer schema might
    add) is dropped at parse time, so nothing the tensor walk cannot see is handed to ONNX Runtime."""
    import onnx

    from tests.conftest import linear_classifier

    model = linear_classifier(np.eye(3), np.zeros(3))
    tensor = onnx.TensorProto()
    tensor.CopyFrom(model.graph.initializer[0])
    extra = tensor.SerializeToString() + bytes([0xBA, 0x3E, 3]) + b"abc"  # field 999, wire type 2, 3 bytes
    with_unknown = onnx.TensorProto()
    with_unknown.ParseFromString(extra)
    assert with_unknown.SerializeToString() != tensor.SerializeToString()  # the field survives a round trip
    model.graph.initializer[0].CopyFrom(with_unknown)
    path = tmp_path / "unknown.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = loader.load_model(path)
    assert loaded.proto.graph.initializer[0].SerializeToString() == tensor.SerializeToString()
