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

import json
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


# --- the model file itself, and the weights' memory, before anything is read ---------------------


@pytest.mark.parametrize("elements", [(1 << 30) // 4, 1], ids=["declared-by-dims", "declared-by-length"])
def test_big_external_weights_are_refused_before_a_byte_is_read(tmp_path: Path, elements: int) -> None:
    """1 GiB of weights (a sparse file) under --max-memory 256M: refused, never opened.

    Declared either by the tensor's dims or only by its external ``length`` (a [1] tensor whose
    range covers the whole file: the loader would read all of it)."""
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "weights.bin"
    with weights.open("wb") as handle:
        handle.truncate(1 << 30)
    model = _write_model(folder, models.declared_external("weights.bin", elements, length=1 << 30))
    watch = OpenWatch(weights)
    try:
        result = CliRunner().invoke(main, ["audit", str(model), "--max-memory", "256M"])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            "fimaudit: error: this model needs at least 3.0 GiB for its weights (3 copies of 1.0 GiB) but "
            "--max-memory is 256.0 MiB; raise --max-memory or audit a smaller model"
        ]
        assert watch.events() == 0, "the weights were read before the memory check"
    finally:
        watch.close()


def test_declared_size_overflowing_int64_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(SECRET)
    model = models.declared_external("weights.bin", 1)
    weight = model.graph.initializer[0]
    del weight.dims[:]
    weight.dims.extend([2**62, 2**62])  # 2^124 elements: np.prod would wrap around
    result = CliRunner().invoke(main, ["inspect", str(_write_model(folder, model))])
    assert result.exit_code == 2
    assert "initializer 'W' declares 2.127e+37 elements" in result.stderr and result.stderr.count("\n") == 1


def test_declared_input_of_2_62_elements_is_described_exactly(tmp_path: Path) -> None:
    """A declared input dimension of 2^62 (x 3 overflows int64) is shown as the number it is."""
    model = models.huge_input()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 2**62
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(main, ["inspect", str(path), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert f"x: float32 [N, 3, {2**62}, 100000]" in result.stdout
    described = json.loads((tmp_path / "m.json").read_text())["model"]["inputs"][0]["shape"]
    assert described == ["N", 3, 2**62, 100000]


@pytest.mark.parametrize("path", ["/proc/self/status", "/proc/self/mem", "/dev/zero"])
def test_kernel_pseudo_files_are_refused(path: str) -> None:
    result = CliRunner().invoke(main, ["inspect", path])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"fimaudit: error: {path} is a kernel pseudo-file ({Path(path).resolve()}), not an ONNX model file"
    ]


def test_fifo_as_the_model_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    result = _cli_in_subprocess(["inspect", str(fifo)], tmp_path)  # TimeoutExpired fails the test
    assert result.returncode == 2
    assert "is not a regular file" in result.stderr and result.stderr.count("\n") == 1
