"""Audit inputs: user data from .npy/.npz (never unpickled) or seeded synthetic samples.

Synthetic inputs are i.i.d. standard normal, N(0, 1) per element, drawn with
the data stream of ``--seed`` (randomness.py): the distribution most normalised image and tabular models are
trained to expect. They make a smoke test, not an audit of real behaviour: pass ``--data``.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fimaudit.errors import InputError
from fimaudit.graph.selection import Selection
from fimaudit.randomness import RandomStreams
from fimaudit.resources import MemoryBudget, array_bytes, check_fits, element_count, format_size

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_SAMPLES = 16
# Refuse to synthesise or hold more than this many bytes of input without being asked.
DEFAULT_MAX_INPUT_BYTES = 4 << 30


@dataclass
class AuditData:
    """Samples to audit, already in the model's input dtype, plus where they came from."""

    inputs: np.ndarray
    source: str
    synthetic: bool
    extra_feeds: dict[str, np.ndarray]
    #: Token ids, mask and per-sample integer rows of an embedding-space audit (tokens.TokenData).
    tokens: Any = None


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_REFUSED = "holds pickled Python objects; fimaudit never unpickles data"
# numpy's own limit on an array's size in bytes (sizes are signed pointer-sized integers).
_MAX_ARRAY_BYTES = np.iinfo(np.intp).max


@dataclass
class _ArrayHeader:
    """Shape and dtype of a stored array, read before any of its data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool = False


def _read_header(stream: IO[bytes], source: str) -> _ArrayHeader:
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
    return _ArrayHeader(tuple(int(d) for d in shape), dtype, bool(fortran))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_size(header: _ArrayHeader, rows: int, budget: MemoryBudget, source: str) -> None:
    per_row = array_bytes(header.shape[1:], header.dtype.itemsize)
    check_fits(f"reading {rows} samples of {source}", rows * per_row, budget, "use --samples or raise --max-memory")


def _read_npy(path: Path, samples: int | None, budget: MemoryBudget) -> np.ndarray:
    """The first ``samples`` rows of a .npy file; the rest of the file is never read.

    Rows are contiguous in C order, so they are read straight after the header into an array of
    their own; a Fortran-ordered file (rare) is read whole, and budgeted whole.
    """
    with path.open("rb") as stream:
        header = _read_header(stream, path.name)
        partial = bool(header.shape) and not header.fortran_order
        rows = header.shape[0] if header.shape else 1
        if samples is not None and partial:
            rows = min(rows, samples)
        _check_size(header, rows, budget, path.name)
        if partial:
            array = np.empty((rows, *header.shape[1:]), dtype=header.dtype)
            wanted = array.nbytes
            got = stream.readinto(array.reshape(-1).view(np.uint8).data) if wanted else 0
            if got != wanted:
                raise InputError(
                    f"{path.name} is truncated: {rows} samples need {wanted} bytes of data, the file "
                    f"holds {got or 0}"
                )
            return array
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path.name} is truncated or not a readable .npy file ({_first_line(exc)})") from exc


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
                    header = _read_header(stream, source)
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
                    header = _read_header(stream, source)
                rows = header.shape[0] if header.shape else 1
                _check_size(header, min(rows, samples or rows), budget, source)
                with archive.open(f"{name}.npy") as stream:
                    array = np.lib.format.read_array(stream, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise InputError(f"{data_path.name} is a corrupt .npz file ({source}: {_first_line(exc)})") from exc
            if array.ndim < 1 or array.shape[0] == 0:
                raise InputError(f"{source} holds no rows (shape {list(array.shape)}); one row per sample is needed")
            found[name] = _check_values(array[:samples] if samples else array, source)
    return found, data_path.name


def _load_array_file(
    path: Path, input_name: str, extra_inputs: list[str], samples: int | None, budget: MemoryBudget
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a .npy or .npz by its content (never by its name), refusing pickles and oversize data."""
    with path.open("rb") as stream:
        start = stream.read(6)
    if start.startswith(_NPY_MAGIC):
        return _read_npy(path, samples, budget), {}
    if start[:4] in _ZIP_MAGICS:
        return _read_npz(path, input_name, extra_inputs, samples, budget)
    if start[:1] == b"\x80":
        raise InputError(f"{path.name} is a Python pickle; fimaudit never unpickles data (save arrays with numpy.save)")
    raise InputError(f"{path.name} is not a readable .npy/.npz file (no numpy or zip header)")


def _shape_text(shape: list) -> str:
    return "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in shape) + "]"


def _check_shape(array: np.ndarray, selection: Selection, source: str) -> None:
    expected = selection.sample_shape
    actual = list(array.shape[1:])
    ok = len(actual) == len(expected) and all(
        not isinstance(e, int) or e == a for e, a in zip(expected, actual, strict=True)
    )
    if not ok:
        raise InputError(
            f"{source} has samples of shape {_shape_text(actual)} (array {list(array.shape)}), but input "
            f"{selection.input_name!r} expects [N] + {_shape_text(expected)}; the first axis indexes samples"
        )


def _expected(selection: Selection) -> str:
    sample = ", ".join("?" if not isinstance(d, int) else str(d) for d in selection.sample_shape)
    return f"input {selection.input_name!r} expects {selection.input_dtype} [N, {sample}]"


def _check_values(array: np.ndarray, source: str, expected: str = "numeric data is required") -> np.ndarray:
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise InputError(f"{source} has dtype {array.dtype}; {expected} (real numbers)")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{source} contains {int(bad.sum())} NaN/Inf values (first at index {first})")
    return array


def load_data(
    path: str | Path | None,
    selection: Selection,
    samples: int | None = None,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    budget: MemoryBudget | None = None,
) -> AuditData:
    """Load ``path`` or synthesise inputs; at most ``samples`` rows, in the input's dtype.

    Sizes are checked against ``budget`` (default: ``max_bytes``) from declared shapes and file
    headers, before anything is allocated or read.
    """
    if budget is None:
        budget = MemoryBudget(max_bytes, f"the input limit is {format_size(max_bytes)} (set --max-memory)")
    dtype = np.dtype(selection.input_dtype)
    if path is None:
        count = samples or DEFAULT_SYNTHETIC_SAMPLES
        shape = [d for d in selection.sample_shape if isinstance(d, int) and d > 0]
        if len(shape) != len(selection.sample_shape):
            raise InputError(
                f"input {selection.input_name!r} has shape {_shape_text(selection.input_shape)} with "
                "unknown sizes; synthetic data needs fixed sizes, pass --data"
            )
        # standard_normal draws float64 before the cast: both are alive for a moment.
        need = count * array_bytes(shape, 8 + dtype.itemsize)
        check_fits(
            f"synthesising {count} sample{'s' if count != 1 else ''} of shape {_shape_text(shape)}",
            need, budget, "use --samples, --data or a smaller input",
        )
        rng = RandomStreams(seed).data()
        inputs = rng.standard_normal((count, *shape)).astype(dtype)
        return AuditData(inputs=inputs, source=f"synthetic N(0,1), seed {seed}", synthetic=True, extra_feeds={})

    data_path = Path(path)
    if not data_path.is_file():
        raise InputError(f"data file not found: {data_path}")
    source = data_path.name
    array, extras = _load_array_file(data_path, selection.input_name, selection.extra_inputs, samples, budget)
    if array.ndim == 0:
        raise InputError(f"{source} holds a scalar; expected samples along the first axis")
    if array.shape[0] == 0:
        raise InputError(f"{source} holds no samples")
    _check_shape(array, selection, source)
    _check_values(array, source, _expected(selection))
    if array.dtype != dtype:
        logger.info("casting %s from %s to the model's %s", source, array.dtype, dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected just below
            array = array.astype(dtype)
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"{source} has values beyond the range of {dtype} (the model's input type)")
    for name, value in extras.items():
        _check_values(value, f"{source}[{name!r}]")
        if value.ndim > 0 and value.shape[0] == 0:
            raise InputError(
                f"{source}[{name!r}] holds no rows (shape {list(value.shape)}); the model's other input "
                f"{name!r} needs one row, used for every sample"
            )
    missing = [name for name in selection.extra_inputs if name not in extras]
    if missing:
        raise InputError(
            f"the model has other inputs {missing}; pass an .npz holding arrays with those names "
            "(one row, used for every sample)"
        )
    feeds = {
        name: np.asarray(value)[0] if np.asarray(value).ndim > 0 else np.asarray(value)
        for name, value in extras.items()
    }
    return AuditData(inputs=np.ascontiguousarray(array, dtype=dtype), source=source, synthetic=False, extra_feeds=feeds)
