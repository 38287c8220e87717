"""True class labels of the audited samples: from image folders, a CSV list, or ``--labels FILE.npy``.

Labels turn an audit into an evaluation: accuracy, lambda_max by true class, and correct against
misclassified samples (``fimaudit.labelled``). A labels file is read like any data file: its
header first, never unpickled, one integer class index per sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fimaudit.data.arrays import NPY_MAGIC, read_header
from fimaudit.errors import InputError

# A labels file larger than this is not a labels file (over 100 million samples).
_MAX_LABELS = 100_000_000


def read_labels(path: str | Path, count: int) -> np.ndarray:
    """The first ``count`` labels of a 1-D integer .npy (int64); fewer than ``count`` is an error."""
    label_path = Path(path)
    if not label_path.is_file():
        raise InputError(f"labels file not found: {label_path}")
    with label_path.open("rb") as stream:
        if not stream.read(6).startswith(NPY_MAGIC):
            raise InputError(f"{label_path.name} is not an .npy file; --labels takes a 1-D integer .npy")
        stream.seek(0)
        header = read_header(stream, label_path.name)
        if len(header.shape) != 1 or header.dtype.kind not in "iu" or header.fortran_order:
            raise InputError(
                f"{label_path.name} holds {header.dtype} of shape {list(header.shape)}; --labels takes one "
                "integer class index per sample (a 1-D integer array)"
            )
        if header.shape[0] > _MAX_LABELS:
            raise InputError(f"{label_path.name} declares {header.shape[0]} labels, more than any audit has samples")
        if header.shape[0] < count:
            raise InputError(f"{label_path.name} holds {header.shape[0]} labels for {count} samples")
        raw = np.empty(count, dtype=header.dtype)
        got = stream.readinto(raw.view(np.uint8).data) if count else 0
        if got != raw.nbytes:
            raise InputError(f"{label_path.name} is truncated: {count} labels need {raw.nbytes} bytes, it holds {got}")
    labels = raw.astype(np.int64)
    if count and labels.min() < 0:
        raise InputError(f"{label_path.name}: class indices must be non-negative, got {int(labels.min())}")
    return labels


def check_labels(labels: np.ndarray | None, num_classes: int, source: str) -> None:
    """Every label is a class of the model (0 .. K-1), or a one-line error naming the first that is not."""
    if labels is None or labels.size == 0:
        return
    top = int(labels.max())
    if top >= num_classes:
        first = int(np.argmax(labels >= num_classes))
        raise InputError(
            f"{source}: sample {first} has label {int(labels[first])}, but the model has {num_classes} classes "
            f"(0..{num_classes - 1})"
        )
