"""Output files: checked before the long computation, written atomically after it.

A report is written to a temporary file in the destination folder and renamed into place, so an
interrupted or failed run never leaves a half-written report that a pipeline could mistake for
a real one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fimaudit.errors import OutputPathError


def check_writable(path: str | os.PathLike[str] | None) -> None:
    """Fail now, not after an hour of compute, when ``path`` cannot be written."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise OutputPathError(f"{target} is a folder; give a file name")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise OutputPathError(f"cannot write {target}: {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {target}: folder {folder} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"cannot write {target}: the file is not writable")


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file and a rename."""
    target = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    except OSError as exc:
        raise OutputPathError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        # mkstemp creates the file 0600; a report is an ordinary file: honour the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):  # disk full, quota, I/O error: a clear one-line error
            raise OutputPathError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


def json_text(document: Any) -> str:
    """The JSON text fimaudit writes: sorted keys for stable diffs, NaN refused (not valid JSON)."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=_to_builtin) + "\n"


def _to_builtin(value: Any) -> Any:
    """numpy scalars and arrays to plain Python for the JSON encoder."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
