"""Audit inputs: arrays (.npy/.npz, never unpickled), image files with their preprocessing, or seeded synthetic samples.

Synthetic inputs are i.i.d. standard normal, N(0, 1) per element, drawn with
the data stream of ``--seed`` (randomness.py): the distribution most normalised image and tabular models are
trained to expect. They make a smoke test, not an audit of real behaviour: pass ``--data``.

Large inputs do not live in memory (streaming.py): a .npy is mapped, and images are decoded one at
a time into a spill buffer, so peak memory does not grow with the number of samples.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fimaudit.data import streaming
from fimaudit.data.arrays import check_values, load_array_file
from fimaudit.data.images import ImageList, decode, is_image_list, list_csv, list_folder, read_image_bytes
from fimaudit.data.labels import read_labels
from fimaudit.data.preprocess import PreprocessSpec, check_against_model, parse_spec, spec_from_metadata
from fimaudit.errors import InputError
from fimaudit.graph.selection import Selection
from fimaudit.randomness import RandomStreams
from fimaudit.resources import MemoryBudget, array_bytes, check_fits, format_size

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
    #: True class of each sample (int64 [N]) when known: image folders, a CSV list, or --labels.
    labels: np.ndarray | None = None
    #: Class names by index when the data names them (folder names, CSV class names).
    class_names: tuple[str, ...] | None = None
    #: The preprocessing that made image files into ``inputs`` (None for arrays and synthetic data).
    preprocess: PreprocessSpec | None = None
    #: Image files, relative to the data's folder, in sample order (None for arrays).
    files: tuple[str, ...] | None = None


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


def _cast(array: np.ndarray, dtype: np.dtype, source: str) -> np.ndarray:
    """``array`` in the model's dtype; a mapped array is cast batch by batch into a spill buffer."""
    logger.info("casting %s from %s to the model's %s", source, array.dtype, dtype)
    out = streaming.spill_buffer(array.shape, dtype)
    row_bytes = array_bytes(array.shape[1:], max(array.dtype.itemsize, dtype.itemsize))
    for start, stop in streaming.batches(array.shape[0], row_bytes):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected just below
            out[start:stop] = array[start:stop]
        if dtype.kind == "f" and not np.isfinite(out[start:stop]).all():
            raise InputError(f"{source} has values beyond the range of {dtype} (the model's input type)")
        streaming.release(array)
        streaming.release(out)
    return out


def _synthetic(selection: Selection, samples: int | None, seed: int, budget: MemoryBudget) -> AuditData:
    dtype = np.dtype(selection.input_dtype)
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
        need,
        budget,
        "use --samples, --data or a smaller input",
    )
    rng = RandomStreams(seed).data()
    inputs = rng.standard_normal((count, *shape)).astype(dtype)
    return AuditData(inputs=inputs, source=f"synthetic N(0,1), seed {seed}", synthetic=True, extra_feeds={})


def _arrays(data_path: Path, selection: Selection, samples: int | None, budget: MemoryBudget) -> AuditData:
    dtype = np.dtype(selection.input_dtype)
    source = data_path.name
    array, extras = load_array_file(data_path, selection.input_name, selection.extra_inputs, samples, budget)
    if array.ndim == 0:
        raise InputError(f"{source} holds a scalar; expected samples along the first axis")
    if array.shape[0] == 0:
        raise InputError(f"{source} holds no samples")
    _check_shape(array, selection, source)
    check_values(array, source, _expected(selection))
    if array.dtype != dtype:
        array = _cast(array, dtype, source)
    for name, value in extras.items():
        check_values(value, f"{source}[{name!r}]")
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
    if not streaming.is_streamed(array):
        array = np.ascontiguousarray(array, dtype=dtype)
    return AuditData(inputs=array, source=source, synthetic=False, extra_feeds=feeds)


def _spec_for_images(
    preprocess: str | None, metadata: Mapping[str, str] | None, selection: Selection
) -> PreprocessSpec:
    if preprocess:
        return parse_spec(preprocess)
    stated = spec_from_metadata(metadata or {})
    if stated is not None:
        logger.info("preprocessing read from the model's metadata_props")
        return stated
    raise InputError(
        f"image data needs its preprocessing: --preprocess resize=...,center_crop=...,scale=1/255,mean=...,std=...,"
        f"layout=NCHW|NHWC,channels=RGB|BGR|L (or a JSON file); {_expected(selection)}"
    )


def _images(
    listing: ImageList, selection: Selection, spec: PreprocessSpec, samples: int | None, budget: MemoryBudget
) -> AuditData:
    """Decode and preprocess the listed images one at a time into a (spilled) array."""
    dtype = np.dtype(selection.input_dtype)
    if dtype.kind != "f":
        raise InputError(f"{_expected(selection)}; image data gives floats, the input is not a float tensor")
    files = listing.files[:samples] if samples else listing.files
    first = decode(read_image_bytes(listing.root, files[0]), files[0], spec)
    check_against_model(spec, first.shape, selection.sample_shape, selection.input_name)
    row_bytes = array_bytes(first.shape, dtype.itemsize)
    if len(files) * row_bytes <= streaming.STREAM_THRESHOLD_BYTES:
        check_fits(f"decoding {len(files)} images", len(files) * row_bytes, budget, "use --samples")
    inputs = streaming.spill_buffer((len(files), *first.shape), dtype)
    batch_rows = max(1, streaming.SWEEP_BATCH_BYTES // max(1, row_bytes))
    for index, name in enumerate(files):
        tensor = first if index == 0 else decode(read_image_bytes(listing.root, name), name, spec)
        if tensor.shape != first.shape:
            raise InputError(
                f"{name} gives a tensor of shape {list(tensor.shape)} after preprocessing, {files[0]} gave "
                f"{list(first.shape)}; add resize=/center_crop= so that every image has the same size"
            )
        inputs[index] = tensor
        if (index + 1) % batch_rows == 0:
            streaming.release(inputs)
    labels = None if listing.labels is None else np.asarray(listing.labels[: len(files)], dtype=np.int64)
    return AuditData(
        inputs=inputs,
        source=listing.source,
        synthetic=False,
        extra_feeds={},
        labels=labels,
        class_names=listing.class_names,
        preprocess=spec,
        files=tuple(files),
    )


def load_data(
    path: str | Path | None,
    selection: Selection,
    samples: int | None = None,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    budget: MemoryBudget | None = None,
    preprocess: str | None = None,
    labels_path: str | Path | None = None,
    metadata: Mapping[str, str] | None = None,
) -> AuditData:
    """Load ``path`` or synthesise inputs; at most ``samples`` rows, in the input's dtype.

    ``path`` is an .npy/.npz, a folder of images or a CSV list of them (images need a
    preprocessing spec: ``preprocess``, else the model's ``metadata``). ``labels_path`` (an
    integer .npy) gives the true classes, overriding a folder's or a list's. Sizes are checked
    against ``budget`` (default: ``max_bytes``) from declared shapes and file headers, before
    anything is allocated or read; mapped and spilled inputs are not charged to it.
    """
    if budget is None:
        budget = MemoryBudget(max_bytes, f"the input limit is {format_size(max_bytes)} (set --max-memory)")
    if path is None:
        if preprocess or labels_path:
            raise InputError("--preprocess and --labels describe --data; synthetic inputs have neither")
        return _synthetic(selection, samples, seed, budget)
    data_path = Path(path)
    if is_image_list(data_path):
        if data_path.suffix.lower() == ".csv" and not data_path.is_file():
            raise InputError(f"data file not found: {data_path}")
        listing = list_folder(data_path) if data_path.is_dir() else list_csv(data_path)
        data = _images(listing, selection, _spec_for_images(preprocess, metadata, selection), samples, budget)
    elif not data_path.is_file():
        raise InputError(f"data file not found: {data_path}")
    else:
        if preprocess:
            raise InputError(
                f"--preprocess applies to image data (a folder or a .csv list); {data_path.name} is already a tensor"
            )
        data = _arrays(data_path, selection, samples, budget)
    if labels_path is not None:
        data.labels = read_labels(labels_path, int(data.inputs.shape[0]))
        data.class_names = None
    return data
