""".npy and .npz files as audit data: headers checked before any data is read, never unpickled.

A .npy whose audited rows are larger than ``streaming.STREAM_THRESHOLD_BYTES`` is mapped read-only
instead of read (streaming.py): its rows stay in the file, and the memory budget is not charged
for them. Smaller files, Fortran-ordered files and .npz members are read, within the budget.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from fimaudit.data import streaming
from fimaudit.errors import InputError
from fimaudit.resources import MemoryBudget, array_bytes, check_fits, element_count

logger = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_REFUSED = "holds pickled Python objects; fimaudit never unpickles data"
# numpy's own limit on an array's size in bytes (sizes are signed pointer-sized integers).
_MAX_ARRAY_BYTES = np.iinfo(np.intp).max


@dataclass
class ArrayHeader:
    """Shape and dtype of a stored array, read before any of its data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool = False


def read_header(stream: IO[bytes], source: str) -> ArrayHeader:
    """The .npy header at the start of ``stream``: refuses object arrays before they are read."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{source} is not a readable .npy array (bad header: {_first_line(exc)})") from exc
    if dtype.hasobject:
        raise InputError(f"{source} {_PICKLE_REFUSED}")
    if any(int(d) < 0 for d in shape):
        raise InputError(f"{source} is not a readable .npy array (bad header: shape {tuple(shape)})")
    elements = element_count(shape)
    if elements * max(1, dtype.itemsize) > _MAX_ARRAY_BYTES:
        raise InputError(
            f"{source} is not a readable .npy array: its header declares shape {tuple(int(d) for d in shape)}, "
            f"{elements} elements, more than any array can hold"
        )
    return ArrayHeader(tuple(int(d) for d in shape), dtype, bool(fortran))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_size(header: ArrayHeader, rows: int, budget: MemoryBudget, source: str) -> None:
    per_row = array_bytes(header.shape[1:], header.dtype.itemsize)
    check_fits(f"reading {rows} samples of {source}", rows * per_row, budget, "use --samples or raise --max-memory")


def _read_npy(path: Path, samples: int | None, budget: MemoryBudget) -> np.ndarray:
    """The first ``samples`` rows of a .npy file; the rest of the file is never read.

    Rows are contiguous in C order, so they are read straight after the header into an array of
    their own; a Fortran-ordered file (rare) is read whole, and budgeted whole.
    """
    with path.open("rb") as stream:
        header = read_header(stream, path.name)
        partial = bool(header.shape) and not header.fortran_order
        rows = header.shape[0] if header.shape else 1
        if samples is not None and partial:
            rows = min(rows, samples)
        row_bytes = array_bytes(header.shape[1:], header.dtype.itemsize) if header.shape else 0
        if partial and rows * row_bytes > streaming.STREAM_THRESHOLD_BYTES:
            return _map_rows(path, stream.tell(), header, rows)
        _check_size(header, rows, budget, path.name)
        if partial:
            array = np.empty((rows, *header.shape[1:]), dtype=header.dtype)
            wanted = array.nbytes
            got = stream.readinto(array.reshape(-1).view(np.uint8).data) if wanted else 0
            if got != wanted:
                raise InputError(
                    f"{path.name} is truncated: {rows} samples need {wanted} bytes of data, the file holds {got or 0}"
                )
            return array
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path.name} is truncated or not a readable .npy file ({_first_line(exc)})") from exc


def _map_rows(path: Path, offset: int, header: ArrayHeader, rows: int) -> np.ndarray:
    """The first ``rows`` rows mapped read-only (streaming.py), after checking the file holds them."""
    shape = (rows, *header.shape[1:])
    wanted = element_count(shape) * header.dtype.itemsize
    held = max(0, path.stat().st_size - offset)
    if held < wanted:
        raise InputError(f"{path.name} is truncated: {rows} samples need {wanted} bytes of data, the file holds {held}")
    logger.info("%s: %d samples mapped from the file, not read into memory", path.name, rows)
    return streaming.map_npy_rows(path, offset, shape, header.dtype)


def _read_npz(
    path: Path, input_name: str, extra_inputs: list[str], samples: int | None, budget: MemoryBudget
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The input array (and the model's other inputs) from an .npz, headers checked first."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{path.name} is a corrupt .npz file ({_first_line(exc)})") from exc
    with archive:
        names = [member[:-4] for member in archive.namelist() if member.endswith(".npy")]
        if input_name in names:
            main_name = input_name
        elif len(names) == 1:
            main_name = names[0]
        else:
            raise InputError(
                f"{path.name} holds arrays {names}; name one of them {input_name!r} "
                "(the model's input) or keep a single array"
            )

        def read(name: str, limit: int | None) -> np.ndarray:
            source = f"{path.name}[{name!r}]"
            try:
                with archive.open(f"{name}.npy") as stream:
                    header = read_header(stream, source)
                _check_size(header, header.shape[0] if header.shape else 1, budget, source)
                with archive.open(f"{name}.npy") as stream:  # read_array wants the header again
                    array = np.lib.format.read_array(stream, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise InputError(f"{path.name} is a corrupt .npz file ({source}: {_first_line(exc)})") from exc
            return array[:limit] if limit is not None and array.ndim else array

        main = read(main_name, samples)
        extras = {name: read(name, None) for name in extra_inputs if name in names}
    return main, extras


def read_named_arrays(
    path: str | Path, names: list[str], samples: int | None, budget: MemoryBudget
) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of an .npz that are among ``names`` (first ``samples`` rows each), and its name.

    For per-sample integer inputs (``--wrt embeddings``: input_ids, attention_mask, ...); headers
    are checked and budgeted before any data is read, pickles refused.
    """
    data_path = Path(path)
    if not data_path.is_file():
        raise InputError(f"data file not found: {data_path}")
    with data_path.open("rb") as stream:
        start = stream.read(6)
    if start[:4] not in _ZIP_MAGICS:
        raise InputError(
            f"{data_path.name} is not an .npz file; token data is an .npz of named arrays ({', '.join(names)})"
        )
    found: dict[str, np.ndarray] = {}
    try:
        archive = zipfile.ZipFile(data_path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{data_path.name} is a corrupt .npz file ({_first_line(exc)})") from exc
    with archive:
        present = {member[:-4] for member in archive.namelist() if member.endswith(".npy")}
        for name in names:
            if name not in present:
                continue
            source = f"{data_path.name}[{name!r}]"
            try:
                with archive.open(f"{name}.npy") as stream:
                    header = read_header(stream, source)
                rows = header.shape[0] if header.shape else 1
                _check_size(header, min(rows, samples or rows), budget, source)
                with archive.open(f"{name}.npy") as stream:
                    array = np.lib.format.read_array(stream, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise InputError(f"{data_path.name} is a corrupt .npz file ({source}: {_first_line(exc)})") from exc
            if array.ndim < 1 or array.shape[0] == 0:
                raise InputError(f"{source} holds no rows (shape {list(array.shape)}); one row per sample is needed")
            found[name] = check_values(array[:samples] if samples else array, source)
    return found, data_path.name


def load_array_file(
    path: Path, input_name: str, extra_inputs: list[str], samples: int | None, budget: MemoryBudget
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a .npy or .npz by its content (never by its name), refusing pickles and oversize data."""
    with path.open("rb") as stream:
        start = stream.read(6)
    if start.startswith(NPY_MAGIC):
        return _read_npy(path, samples, budget), {}
    if start[:4] in _ZIP_MAGICS:
        return _read_npz(path, input_name, extra_inputs, samples, budget)
    if start[:1] == b"\x80":
        raise InputError(f"{path.name} is a Python pickle; fimaudit never unpickles data (save arrays with numpy.save)")
    raise InputError(f"{path.name} is not a readable .npy/.npz file (no numpy or zip header)")


def check_values(array: np.ndarray, source: str, expected: str = "numeric data is required") -> np.ndarray:
    """``array`` when it holds real numbers without NaN or Inf; else a one-line InputError.

    A mapped array is scanned batch by batch, each batch's pages released after it (streaming.py).
    """
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise InputError(f"{source} has dtype {array.dtype}; {expected} (real numbers)")
    if array.dtype.kind != "f":
        return array
    if array.ndim == 0 or not streaming.is_streamed(array):
        _check_finite(array, source)
        return array
    row_bytes = array_bytes(array.shape[1:], array.dtype.itemsize)
    bad_total, first = 0, None
    for start, stop in streaming.batches(array.shape[0], row_bytes):
        bad = ~np.isfinite(array[start:stop])
        count = int(bad.sum())
        if count and first is None:
            found = np.argwhere(bad)[0]
            first = (int(found[0]) + start, *(int(i) for i in found[1:]))
        bad_total += count
        streaming.release(array)
    if bad_total:
        raise InputError(f"{source} contains {bad_total} NaN/Inf values (first at index {first})")
    return array


def _check_finite(array: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{source} contains {int(bad.sum())} NaN/Inf values (first at index {first})")
