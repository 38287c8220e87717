"""Sample arrays that do not live in the process's memory: mapped files and spill buffers.

An audit touches each sample a bounded number of times (its logits, its estimator run), so the
samples need not be resident together. Two kinds of array keep them out of memory while staying
plain ``numpy.ndarray`` objects, so that every stage (planning, the estimator loop, the report's
pictures) reads them as it reads an in-memory array:

- a ``.npy`` file mapped read-only (:func:`map_npy_rows`): its rows are the file's pages;
- a spill buffer (:func:`spill_buffer`) for data that must be computed first (decoded images,
  a cast to the model's dtype): an unlinked temporary file, mapped, filled batch by batch.

A mapped page that was read stays counted in the process's resident set until it is unmapped or
released, so whoever sweeps through all rows calls :func:`release` after each batch
(``madvise(MADV_DONTNEED)``: a clean file-backed page is dropped from this process and read back
from the page cache on the next access). That is what keeps peak RSS independent of the number of
samples; the values never change.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from fimaudit.errors import ResourceError

#: Arrays larger than this are mapped (a .npy) or spilled (decoded images, casts) instead of held.
STREAM_THRESHOLD_BYTES = 16 << 20
#: Rows per sweep batch of :func:`batches` (bounded further by :data:`SWEEP_BATCH_BYTES`).
SWEEP_BATCH_ROWS = 256
SWEEP_BATCH_BYTES = 8 << 20


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The mmap an array views, following ``.base`` (None for an ordinary array)."""
    base: Any = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def is_streamed(array: np.ndarray) -> bool:
    """Whether ``array`` lives in a mapped file (a .npy or a spill buffer) rather than in memory."""
    return _mapping_of(array) is not None


def release(array: np.ndarray) -> None:
    """Drop the pages of a mapped ``array`` from this process's resident set (no-op otherwise).

    The data stays in the file (and usually in the page cache); the next read maps it back.
    Only the mapping's own pages are touched, so views of the same file elsewhere stay valid.
    """
    mapping = _mapping_of(array)
    if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    with contextlib.suppress(OSError, ValueError):  # a closed mapping: nothing to release
        mapping.madvise(mmap.MADV_DONTNEED)


def _map(fd: int, length: int, writable: bool) -> mmap.mmap:
    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
    return mmap.mmap(fd, length, access=access)


def map_npy_rows(path: str | os.PathLike[str], offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Rows ``shape`` of ``dtype`` stored C-contiguously at ``offset`` of ``path``, mapped read-only.

    The caller checked the header and that the file holds these bytes; the array is read-only,
    so nothing the audit does can write into the user's file.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with open(path, "rb") as handle:
        mapping = _map(handle.fileno(), offset + nbytes, writable=False) if nbytes else None
    if mapping is None:
        return np.empty(shape, dtype=dtype)
    array = np.ndarray(shape, dtype=dtype, buffer=mapping, offset=offset)
    array.flags.writeable = False
    return array


def spill_buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A writable zeroed array of ``shape``: in memory when small, else in an unlinked temporary file.

    The file is removed from its folder at once (it disappears when the process ends, however it
    ends); the folder is ``TMPDIR``'s, which should have room for the samples.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes <= STREAM_THRESHOLD_BYTES:
        return np.zeros(shape, dtype=dtype)
    with tempfile.TemporaryFile(prefix="fimaudit-samples-") as handle:
        try:  # the room reserved now: a full disk later would kill the process (SIGBUS) on a write
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, nbytes)
            else:
                handle.truncate(nbytes)
        except OSError as exc:
            raise ResourceError(
                f"no room for {nbytes / 2**20:.0f} MiB of decoded samples in {tempfile.gettempdir()} "
                f"({exc.strerror or exc}); set TMPDIR to a folder with room, or use --samples"
            ) from None
        mapping = _map(handle.fileno(), nbytes, writable=True)
    return np.ndarray(shape, dtype=dtype, buffer=mapping)


def batches(count: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges that sweep ``count`` rows in batches of bounded size."""
    rows = max(1, min(SWEEP_BATCH_ROWS, SWEEP_BATCH_BYTES // max(1, row_bytes)))
    for start in range(0, count, rows):
        yield start, min(count, start + rows)


def value_statistics(array: np.ndarray) -> dict[str, float]:
    """min, max, mean and std of a (mapped) array in float64, batch by batch (two passes for std)."""
    count = int(array.size)
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * 8
    low, high, total = np.inf, -np.inf, 0.0
    for start, stop in batches(int(array.shape[0]), row_bytes):
        block = np.asarray(array[start:stop], dtype=np.float64)
        low, high, total = min(low, float(block.min())), max(high, float(block.max())), total + float(block.sum())
        release(array)
    mean = total / count
    squares = 0.0
    for start, stop in batches(int(array.shape[0]), row_bytes):
        block = np.asarray(array[start:stop], dtype=np.float64)
        squares += float(np.square(block - mean).sum())
        release(array)
    return {"min": low, "max": high, "mean": mean, "std": float(np.sqrt(squares / count))}
