"""The data layer: what an audit reads its samples from.

- ``arrays.py``: .npy/.npz files (headers first, never unpickled; large .npy mapped);
- ``images.py``: image folders (ImageFolder) and CSV lists, read as hostile data;
- ``preprocess.py``: the declared preprocessing spec that turns an image into a model input;
- ``labels.py``: true classes (``--labels``);
- ``streaming.py``: mapped and spilled arrays, released batch by batch (flat peak memory);
- ``loading.py``: ``load_data``, the one entry point, and ``AuditData``.
"""

from fimaudit.data.arrays import read_named_arrays
from fimaudit.data.loading import DEFAULT_MAX_INPUT_BYTES, DEFAULT_SYNTHETIC_SAMPLES, AuditData, load_data
from fimaudit.data.preprocess import PreprocessSpec

__all__ = [
    "DEFAULT_MAX_INPUT_BYTES",
    "DEFAULT_SYNTHETIC_SAMPLES",
    "AuditData",
    "PreprocessSpec",
    "load_data",
    "read_named_arrays",
]
