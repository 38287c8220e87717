"""Mapped .npy and spilled images: the same numbers as in-memory data, read-only, pages released."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.data import load_data, streaming
from fimaudit.errors import InputError
from fimaudit.graph.loader import load_model
from fimaudit.graph.selection import select_input_output
from fimaudit.report.document import data_statistics
from tests.conftest import SAMPLES
from tests.data.helpers import write_folder


@pytest.fixture
def stream_everything(monkeypatch):
    """Map and spill even tiny data (the threshold is 16 MiB)."""
    monkeypatch.setattr(streaming, "STREAM_THRESHOLD_BYTES", 0)
    monkeypatch.setattr(streaming, "SWEEP_BATCH_ROWS", 3)


def _lambdas(data_path: Path) -> list[float]:
    config = AuditConfig(model_path=str(SAMPLES / "mlp.onnx"), data_path=str(data_path), samples=10, bounds=False,
                         method="lanczos", budget=20)
    result = run_audit(config)
    return [s.value for s in result.samples]


def test_a_mapped_npy_audits_like_one_in_memory(tmp_path: Path, monkeypatch) -> None:
    in_memory = _lambdas(SAMPLES / "digits_test.npy")
    monkeypatch.setattr(streaming, "STREAM_THRESHOLD_BYTES", 0)
    monkeypatch.setattr(streaming, "SWEEP_BATCH_ROWS", 3)
    selection = select_input_output(load_model(SAMPLES / "mlp.onnx"))
    data = load_data(SAMPLES / "digits_test.npy", selection)
    assert streaming.is_streamed(data.inputs) and not data.inputs.flags.writeable
    np.testing.assert_array_equal(data.inputs, np.load(SAMPLES / "digits_test.npy"))
    assert _lambdas(SAMPLES / "digits_test.npy") == in_memory
    # A float64 file is cast batch by batch into a spill buffer, never whole in memory.
    np.save(tmp_path / "wide.npy", np.load(SAMPLES / "digits_test.npy").astype(np.float64))
    cast = load_data(tmp_path / "wide.npy", selection)
    assert cast.inputs.dtype == np.float32 and streaming.is_streamed(cast.inputs)
    assert _lambdas(tmp_path / "wide.npy") == in_memory


def test_checks_and_statistics_run_batch_by_batch(tmp_path: Path, stream_everything) -> None:
    selection = select_input_output(load_model(SAMPLES / "mlp.onnx"))
    values = np.load(SAMPLES / "digits_test.npy")
    bad = values.copy()
    bad[7, 0, 2, 5] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"contains 1 NaN/Inf values \(first at index \(7, 0, 2, 5\)\)"):
        load_data(tmp_path / "bad.npy", selection)
    mapped = load_data(SAMPLES / "digits_test.npy", selection).inputs
    want = data_statistics(np.array(values))  # an in-memory copy: numpy's own float64 statistics
    got = data_statistics(mapped)
    assert got == pytest.approx(want, rel=1e-12)
    cut = tmp_path / "cut.npy"
    cut.write_bytes((SAMPLES / "digits_test.npy").read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        load_data(cut, selection)


def test_release_drops_resident_pages(tmp_path: Path) -> None:
    """After release, the mapping's pages are no longer resident (mincore via /proc smaps_rollup is coarse)."""
    array = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(1024, 1024))
    array[:] = 1.0
    del array
    header = 128
    mapped = streaming.map_npy_rows(tmp_path / "big.npy", header, (1024, 1024), np.dtype(np.float32))
    assert float(mapped.sum()) == 1024 * 1024  # every page touched
    before = _resident_kib(mapped)
    streaming.release(mapped)
    after = _resident_kib(mapped)
    assert before >= 3000 and after < before / 4, (before, after)
    assert float(mapped[1023].sum()) == 1024  # still readable


def _resident_kib(array: np.ndarray) -> int:
    """Resident KiB of the mapping that holds ``array`` (its line in /proc/self/smaps)."""
    address = array.__array_interface__["data"][0]
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for number, line in enumerate(lines):
        if "-" in line.split(" ")[0] and all(c in "0123456789abcdef-" for c in line.split(" ")[0]):
            start, stop = (int(part, 16) for part in line.split(" ")[0].split("-"))
            if start <= address < stop:
                for entry in lines[number + 1 : number + 20]:
                    if entry.startswith("Rss:"):
                        return int(entry.split()[1])
    raise AssertionError("mapping not found")


def test_images_are_spilled_when_large(tmp_path: Path, stream_everything) -> None:
    selection = select_input_output(load_model(SAMPLES / "mlp.onnx"))
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8), dtype=np.uint8)
    write_folder(tmp_path / "images", pixels)
    data = load_data(tmp_path / "images", selection, preprocess="channels=L,scale=1/255")
    assert streaming.is_streamed(data.inputs)
    np.testing.assert_allclose(data.inputs[:, 0], pixels / 255, rtol=1e-6)
