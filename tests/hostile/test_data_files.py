"""Good data files still load after the hardening: .npy and .npz agree, only requested rows are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fimaudit.data import load_data
from fimaudit.errors import InputError, ResourceError
from fimaudit.graph.loader import load_model
from fimaudit.graph.selection import select_input_output
from fimaudit.resources import MemoryBudget
from tests.hostile import models

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


@pytest.fixture(scope="module")
def digits_selection():
    return select_input_output(load_model(SAMPLES / "mlp.onnx"))


def test_npy_and_npz_give_the_same_samples(digits_selection) -> None:
    from_npy = load_data(SAMPLES / "digits_test.npy", digits_selection, samples=5)
    from_npz = load_data(SAMPLES / "digits_test.npz", digits_selection, samples=5)
    np.testing.assert_array_equal(from_npy.inputs, from_npz.inputs)
    np.testing.assert_array_equal(from_npy.inputs, np.load(SAMPLES / "digits_test.npy")[:5])
    assert from_npy.inputs.dtype == np.float32


def test_only_the_requested_rows_are_read(tmp_path: Path, digits_selection) -> None:
    """A file cut after 10 of its 64 rows: 5 samples load, 50 do not (the rest was never read)."""
    full = tmp_path / "full.npy"
    np.save(full, np.load(SAMPLES / "digits_test.npy"))
    header_size = len(full.read_bytes()) - 64 * 64 * 4
    cut = tmp_path / "cut.npy"
    cut.write_bytes(full.read_bytes()[: header_size + 10 * 64 * 4])
    assert load_data(cut, digits_selection, samples=5).inputs.shape == (5, 1, 8, 8)
    with pytest.raises(InputError, match="truncated"):
        load_data(cut, digits_selection, samples=50)


def test_budget_counts_only_the_requested_rows(digits_selection) -> None:
    row = 64 * 4
    budget = MemoryBudget(10 * row, "--max-memory is 2.5 KiB")
    assert load_data(SAMPLES / "digits_test.npy", digits_selection, samples=10, budget=budget).inputs.shape[0] == 10
    with pytest.raises(ResourceError, match=r"reading 11 samples of digits_test\.npy would need 2\.8 KiB"):
        load_data(SAMPLES / "digits_test.npy", digits_selection, samples=11, budget=budget)


def test_npz_feeds_the_other_inputs(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(models.two_inputs().SerializeToString())
    selection = select_input_output(load_model(path))
    data_path = tmp_path / "data.npz"
    np.savez(data_path, x=np.ones((3, 4), np.float64), bias_in=np.array([[1.0, 2.0, 3.0]], np.float32))
    data = load_data(data_path, selection)
    assert data.inputs.shape == (3, 4) and data.inputs.dtype == np.float32
    np.testing.assert_array_equal(data.extra_feeds["bias_in"], [1.0, 2.0, 3.0])


def test_values_beyond_float32_are_refused(tmp_path: Path, digits_selection) -> None:
    data = np.load(SAMPLES / "digits_test.npy")[:2].astype(np.float64)
    data[1, 0, 0, 0] = 1e300
    np.save(tmp_path / "data.npy", data)
    with pytest.raises(InputError, match="beyond the range of float32"):
        load_data(tmp_path / "data.npy", digits_selection)
