"""Audit inputs: user data from .npy/.npz (never unpickled) or seeded synthetic samples.

Synthetic inputs are i.i.d. standard normal, N(0, 1) per element, drawn with
``np.random.default_rng(seed)``: the distribution most normalised image and tabular models are
trained to expect. They make a smoke test, not an audit of real behaviour: pass ``--data``.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fimaudit.errors import InputError
from fimaudit.graph.selection import Selection

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


def _load_array_file(path: Path, input_name: str, extra_inputs: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path.name} holds pickled Python objects; fimaudit never unpickles data") from exc
        raise InputError(f"{path.name} is not a readable .npy/.npz file: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path.name} is not a readable .npy/.npz file ({type(exc).__name__})") from exc
    if isinstance(loaded, np.ndarray):
        return loaded, {}
    with loaded as archive:
        try:
            names = list(archive.files)
            if input_name in names:
                main = archive[input_name]
            elif len(names) == 1:
                main = archive[names[0]]
            else:
                raise InputError(
                    f"{path.name} holds arrays {names}; name one of them {input_name!r} "
                    "(the model's input) or keep a single array"
                )
            extras = {name: archive[name] for name in extra_inputs if name in names}
        except ValueError as exc:
            raise InputError(f"{path.name} holds pickled Python objects; fimaudit never unpickles data") from exc
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path.name} is a corrupt .npz file ({type(exc).__name__})") from exc
    return main, extras


def _shape_text(shape: list) -> str:
    return "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in shape) + "]"


def _check_shape(array: np.ndarray, selection: Selection, source: str) -> None:
    expected = selection.sample_shape
    actual = list(array.shape[1:])
    ok = len(actual) == len(expected) and all(
        not isinstance(e, int) or e == a for e, a in zip(expected, actual)
    )
    if not ok:
        raise InputError(
            f"{source} has samples of shape {_shape_text(actual)} (array {list(array.shape)}), but input "
            f"{selection.input_name!r} expects [N] + {_shape_text(expected)}; the first axis indexes samples"
        )


def _check_values(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise InputError(f"{source} has dtype {array.dtype}; numeric data is required")
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
) -> AuditData:
    """Load ``path`` or synthesise inputs; at most ``samples`` rows, in the input's dtype."""
    dtype = np.dtype(selection.input_dtype)
    if path is None:
        count = samples or DEFAULT_SYNTHETIC_SAMPLES
        shape = selection.sample_shape
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise InputError(
                f"input {selection.input_name!r} has shape {_shape_text(selection.input_shape)} with "
                "unknown sizes; synthetic data needs fixed sizes, pass --data"
            )
        need = count * int(np.prod(shape)) * dtype.itemsize
        if need > max_bytes:
            raise InputError(
                f"synthesising {count} samples of shape {_shape_text(shape)} would need {need / 2**30:.1f} GiB; "
                "use --samples or --data"
            )
        rng = np.random.default_rng(seed)
        inputs = rng.standard_normal((count, *shape)).astype(dtype)
        return AuditData(inputs=inputs, source=f"synthetic N(0,1), seed {seed}", synthetic=True, extra_feeds={})

    data_path = Path(path)
    if not data_path.is_file():
        raise InputError(f"data file not found: {data_path}")
    source = data_path.name
    array, extras = _load_array_file(data_path, selection.input_name, selection.extra_inputs)
    if array.ndim == 0:
        raise InputError(f"{source} holds a scalar; expected samples along the first axis")
    if samples is not None:
        array = array[:samples]
    if array.shape[0] == 0:
        raise InputError(f"{source} holds no samples")
    _check_shape(array, selection, source)
    _check_values(array, source)
    if array.dtype != dtype:
        logger.info("casting %s from %s to the model's %s", source, array.dtype, dtype)
    missing = [name for name in selection.extra_inputs if name not in extras]
    if missing:
        raise InputError(
            f"the model has other inputs {missing}; pass an .npz holding arrays with those names "
            "(one row, used for every sample)"
        )
    feeds = {name: np.asarray(value)[0] if np.asarray(value).ndim > 0 else np.asarray(value) for name, value in extras.items()}
    return AuditData(inputs=np.ascontiguousarray(array, dtype=dtype), source=source, synthetic=False, extra_feeds=feeds)
