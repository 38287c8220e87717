"""Confinement holds for every tensor a model can hold, through the CLI, and nothing is opened.

Each place a tensor can hide (sparse initializer values and indices, a sparse ``Constant``, If and
Loop subgraphs, a model-local function and a subgraph inside it, training-info graphs) names
(a) ``../secret.bin`` beside the model's folder and (b) a bare ``cwd_secret.txt`` that is absent
from the model's folder but present in the working directory: ONNX Runtime, given the model as
bytes, would resolve such a name against the working directory. ``fimaudit audit`` and
``fimaudit jacobian`` must refuse with exit 2 and one line naming the tensor and the location,
and inotify must see no open of either secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fimaudit.cli import main
from fimaudit.errors import ModelError
from fimaudit.graph.loader import load_model
from fimaudit.graph.tensor_walk import all_tensors, require_self_contained
from tests.hostile import models
from tests.hostile.open_watch import OpenWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and FIFOs are Linux-only here")

SECRET = np.array([0, 5, 0, 0], np.int64).tobytes()  # valid as floats and as sparse indices


def _write_model(folder: Path, model) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _commands(model: Path, tmp_path: Path) -> dict[str, list[str]]:
    data = tmp_path / "data.npy"
    np.save(data, np.zeros((2, 4), np.float32))
    return {
        "audit": ["audit", str(model), "--samples", "2", "--no-bounds"],
        "jacobian": ["jacobian", str(model), "--data", str(data), "--out", str(tmp_path / "J.npy")],
    }


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``tmp/secret.bin`` beside the model's folder and ``cwd/cwd_secret.txt`` in the working directory."""
    outside = tmp_path / "secret.bin"
    outside.write_bytes(SECRET)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    in_cwd = cwd / "cwd_secret.txt"
    in_cwd.write_bytes(SECRET)
    monkeypatch.chdir(cwd)
    watches = [OpenWatch(outside), OpenWatch(in_cwd)]
    yield watches
    for watch in watches:
        watch.close()


@pytest.mark.parametrize("command", ["audit", "jacobian"])
@pytest.mark.parametrize("location", ["../secret.bin", "cwd_secret.txt"])
@pytest.mark.parametrize("place", models.ESCAPE_PLACES)
def test_escape_is_refused_through_the_cli_and_nothing_is_opened(
    tmp_path: Path, secrets, place: str, location: str, command: str
) -> None:
    model = _write_model(tmp_path / "model", models.external_escape(place, location))
    args = _commands(model, tmp_path)[command]
    for watch in secrets:
        watch.events()  # drain anything from setting up
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fimaudit: error: "), result.stderr
    expected = "outside the model's folder" if location.startswith("..") else "is missing"
    assert expected in lines[0] and repr(location) in lines[0] and "hidden" in lines[0], lines[0]
    assert [watch.events() for watch in secrets] == [0, 0], "a secret file was opened"
    assert not (tmp_path / "J.npy").exists()


@pytest.mark.parametrize("place", models.ESCAPE_PLACES)
def test_external_data_inside_the_folder_loads_and_is_inlined(tmp_path: Path, place: str) -> None:
    """Control: the same models with their data in the folder load, with nothing left external."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(SECRET)
    watch = OpenWatch(folder / "weights.bin")
    try:
        loaded = load_model(_write_model(folder, models.external_escape(place, "weights.bin")))
        assert watch.events() > 0, "inotify did not see the allowed read: the refusals would prove nothing"
    finally:
        watch.close()
    assert loaded.external_data_files == ["weights.bin"]
    require_self_contained(loaded.proto)
    hidden = [found.tensor for found in all_tensors(loaded.proto) if found.tensor.name.startswith("hidden")]
    assert hidden and all(tensor.raw_data for tensor in hidden)
    assert any(tensor.raw_data == SECRET[: len(tensor.raw_data)] for tensor in hidden)


@pytest.mark.parametrize("place", ["initializer", "sparse-values", "function", "training-info"])
def test_external_data_inside_the_folder_audits(tmp_path: Path, place: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(SECRET)
    model = _write_model(folder, models.external_escape(place, "weights.bin"))
    result = CliRunner().invoke(main, _commands(model, tmp_path)["audit"])
    assert result.exit_code == 0, result.output
    assert "lambda_max" in result.output


def test_symlink_leaving_the_folder_is_refused_unopened(tmp_path: Path, secrets) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "secret.bin", folder / "weights.bin")
    model = _write_model(folder, models.external_escape("sparse-values", "weights.bin"))
    for watch in secrets:
        watch.events()
    result = CliRunner().invoke(main, _commands(model, tmp_path)["audit"])
    assert result.exit_code == 2
    assert "outside the model's folder" in result.stderr and "symlink" in result.stderr
    assert result.stderr.count("\n") == 1
    assert secrets[0].events() == 0


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "real.bin").write_bytes(SECRET)
    os.symlink("real.bin", folder / "weights.bin")
    loaded = load_model(_write_model(folder, models.external_escape("initializer", "weights.bin")))
    assert loaded.external_data_files == ["real.bin"]  # the file actually read


def _cli_in_subprocess(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fimaudit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_fifo_as_external_data_is_refused_without_hanging(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it must never be opened."""
    folder = tmp_path / "model"
    folder.mkdir()
    os.mkfifo(folder / "weights.bin")
    model = _write_model(folder, models.external_escape("function", "weights.bin"))
    result = _cli_in_subprocess(["inspect", str(model)], tmp_path)  # TimeoutExpired fails the test
    assert result.returncode == 2, result.stderr
    assert "not a regular file" in result.stderr and result.stderr.count("\n") == 1


def test_external_range_beyond_the_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(SECRET[:8])
    model = models.external_escape("initializer", "weights.bin")
    hidden = model.graph.initializer[-1]
    for entry in hidden.external_data:
        if entry.key == "offset":
            entry.value = str(2**64 + 4)  # no wrap-around: Python ints
    with pytest.raises(ModelError, match=r"reads bytes 18446744073709551620\.\..* which has only 8 bytes"):
        load_model(_write_model(folder, model))
    for entry in hidden.external_data:
        if entry.key == "offset":
            entry.value = "-4"
    with pytest.raises(ModelError, match="invalid external data offset '-4'"):
        load_model(_write_model(folder, model))


def test_self_containment_assertion_catches_a_leftover_reference() -> None:
    with pytest.raises(ModelError, match=r"function local\.hide/.*still refers to external data 'x\.bin'"):
        require_self_contained(models.external_escape("function-subgraph", "x.bin"))
