"""Resumable audits: ``--checkpoint DIR`` keeps each finished sample's result in its own file.

A long audit (hours for an ImageNet-size model) must survive being killed. Every finished sample
is written to ``DIR/samples/NNNNNNNN.json`` atomically (a temporary file in the same folder,
flushed, then renamed over the name: a reader sees the whole file or none), with its top
eigenvector beside it as ``NNNNNNNN.eigenvector.npy`` while the report may still picture it. A
restarted audit loads those results instead of computing them again; since every sample's
result depends only on its index (randomness.py), the final JSON document has the same numbers
as an uninterrupted run's. Nothing is pickled: results are JSON (floats written by ``repr``,
which reads back to the same float64) and eigenvectors ``.npy`` read with ``allow_pickle=False``.

``DIR/manifest.json`` records what decides the numbers (the model's combined SHA-256, a hash of
the audited data, the estimator settings, ...). A restart whose manifest differs is refused
with the differences named, so a checkpoint can never mix results of two different audits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fimaudit.data import AuditData, streaming
from fimaudit.errors import InputError
from fimaudit.fisher.result import SpectralResult
from fimaudit.results import SampleResult

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def data_fingerprint(data: AuditData) -> str:
    """SHA-256 of the audited tensors (and labels), read batch by batch: what the samples are."""
    digest = hashlib.sha256()
    inputs = data.inputs
    digest.update(f"{inputs.dtype.str}{tuple(inputs.shape)}".encode())
    row_bytes = int(np.prod(inputs.shape[1:], dtype=np.int64)) * inputs.dtype.itemsize
    for start, stop in streaming.batches(int(inputs.shape[0]), row_bytes):
        digest.update(np.ascontiguousarray(inputs[start:stop]).tobytes())
        streaming.release(inputs)
    for name in sorted(data.extra_feeds):
        digest.update(name.encode() + np.ascontiguousarray(data.extra_feeds[name]).tobytes())
    if data.labels is not None:
        digest.update(b"labels" + np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    raise TypeError(f"cannot write {type(value).__name__} to a checkpoint")


def _spectral_to_json(result: SpectralResult) -> dict[str, Any]:
    return {
        "value": result.value,
        "kind": result.kind,
        "interval": None if result.interval is None else list(result.interval),
        "confidence": result.confidence,
        "trace": result.trace,
        "model_evaluations": result.model_evaluations,
        "matvecs": result.matvecs,
        "seconds": result.seconds,
        "diagnostics": result.diagnostics,
    }


def _spectral_from_json(entry: Mapping[str, Any], eigenvector: np.ndarray | None) -> SpectralResult:
    interval = entry["interval"]
    return SpectralResult(
        value=float(entry["value"]),
        kind=str(entry["kind"]),
        interval=None if interval is None else (float(interval[0]), float(interval[1])),
        confidence=entry["confidence"],
        trace=entry["trace"],
        eigenvector=eigenvector,
        model_evaluations=int(entry["model_evaluations"]),
        matvecs=int(entry["matvecs"]),
        seconds=float(entry["seconds"]),
        diagnostics=dict(entry["diagnostics"]),
    )


def sample_to_json(sample: SampleResult) -> dict[str, Any]:
    """A sample's result as checkpoint JSON (its eigenvector goes to a file of its own)."""
    return {
        "index": sample.index,
        "space": sample.space,
        "spaces": {name: _spectral_to_json(result) for name, result in sample.spaces.items()},
        "result": _spectral_to_json(sample.result),
        "top_prob": sample.top_prob,
        "predicted_class": sample.predicted_class,
        "logits": np.asarray(sample.logits, dtype=np.float64).tolist(),
        "true_class": sample.true_class,
    }


def sample_from_json(entry: Mapping[str, Any], eigenvector: np.ndarray | None) -> SampleResult:
    """The SampleResult written by :func:`sample_to_json`."""
    space = str(entry["space"])
    spaces = {name: _spectral_from_json(value, None) for name, value in entry["spaces"].items()}
    result = _spectral_from_json(entry["result"], eigenvector)
    spaces[space] = result
    return SampleResult(
        index=int(entry["index"]),
        result=result,
        top_prob=float(entry["top_prob"]),
        predicted_class=int(entry["predicted_class"]),
        logits=np.asarray(entry["logits"], dtype=np.float64),
        true_class=entry["true_class"],
        spaces=spaces,
        space=space,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all (temporary file in the same folder, fsync, rename)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    names = sorted(set(stored) | set(wanted))
    return [
        f"{name}: {stored.get(name)!r} then, {wanted.get(name)!r} now"
        for name in names
        if stored.get(name) != wanted.get(name)
    ]


class Checkpoint:
    """The finished samples of one audit in a folder (see the module doc)."""

    def __init__(self, folder: Path, identity: Mapping[str, Any]) -> None:
        self.folder = folder
        self.samples = folder / "samples"
        self.identity = dict(identity)

    @classmethod
    def open(cls, folder: str | os.PathLike[str], identity: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint in ``folder``: created when new, refused when made by a different audit."""
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise InputError(f"--checkpoint {path} is not a folder")
        wanted = {"format": FORMAT_VERSION, **json.loads(json.dumps(identity, default=_plain))}
        manifest = path / MANIFEST
        if manifest.is_file():
            try:
                stored = json.loads(manifest.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(f"{manifest} is not a readable checkpoint manifest ({exc})") from None
            changed = _differences(stored, wanted)
            if changed:
                raise InputError(
                    f"--checkpoint {path} holds a different audit; refusing to mix results ({'; '.join(changed)}); "
                    "use a new folder or the same arguments"
                )
        elif path.is_dir() and any(path.iterdir()):
            raise InputError(f"--checkpoint {path} is a folder with other files and no {MANIFEST}; use an empty folder")
        checkpoint = cls(path, wanted)
        checkpoint.samples.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            _write_atomic(manifest, json.dumps(wanted, indent=1, sort_keys=True).encode())
        return checkpoint

    @staticmethod
    def recorded(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The identity a checkpoint in ``folder`` was made with; None when there is none (or unreadable).

        Read before the identity of a restart is settled: a setting the restart may choose
        either way (the sample groups' width) is then taken as it was. ``open`` still checks all.
        """
        try:
            stored = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return stored if isinstance(stored, dict) else None

    def _json_path(self, index: int) -> Path:
        return self.samples / f"{index:08d}.json"

    def _vector_path(self, index: int) -> Path:
        return self.samples / f"{index:08d}.eigenvector.npy"

    def done(self) -> set[int]:
        """Indices of the samples already finished."""
        found = set()
        for name in os.listdir(self.samples):
            stem = name[:-5] if name.endswith(".json") else ""
            if stem.isdigit():
                found.add(int(stem))
        return found

    def load(self, index: int) -> SampleResult:
        """Sample ``index`` as it was saved (its eigenvector only while it was kept)."""
        try:
            entry = json.loads(self._json_path(index).read_text(encoding="utf-8"), parse_constant=_constant)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise InputError(f"checkpoint sample {index} is unreadable ({exc}); delete it to recompute it") from None
        vector_path = self._vector_path(index)
        vector = np.load(vector_path, allow_pickle=False) if vector_path.is_file() else None
        return sample_from_json(entry, vector)

    def save(self, sample: SampleResult) -> None:
        """Write one finished sample: its eigenvector first, then its JSON (whose presence means done)."""
        vector = sample.result.eigenvector
        if vector is not None:
            with tempfile.NamedTemporaryFile(dir=self.samples, prefix=".tmp-", suffix=".npy", delete=False) as handle:
                np.save(handle, np.asarray(vector), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, self._vector_path(sample.index))
        text = json.dumps(sample_to_json(sample), default=_plain, allow_nan=True)
        _write_atomic(self._json_path(sample.index), text.encode())

    def drop_eigenvector(self, index: int) -> None:
        """Forget a sample's eigenvector once the report will not picture it."""
        self._vector_path(index).unlink(missing_ok=True)


def _constant(name: str) -> float:
    """NaN and Infinity as Python floats (diagnostics may hold them)."""
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]
