"""Output files as one transaction: checked before the long computation, written all or none.

The rules (SECURITY.md, "outputs"):

- Every file the run reads is an input (the model, each of its external-data files, the data
  file). An output is refused when it is the same file as an input, compared by (st_dev, st_ino)
  and not only by path, so a hard link or a symlink to an input is caught as well.
- An output path is either absent or a regular file. A symbolic link there is never followed nor
  replaced, and a FIFO, socket, device or folder is never opened nor replaced (``lstat`` only).
- Two outputs may not name the same file.
- All outputs of a command appear together or none does. Each is written to a temporary file in
  its destination folder and fsynced; only then are all renamed into place, with SIGINT/SIGTERM
  held back. A failure or an interruption before the renames removes every temporary file; a
  rename that fails midway puts back the files that were there before (kept through a hard link
  until every rename has succeeded).

``OutputSet`` is the one way fimaudit writes files; every command (inspect, audit, compare,
jacobian) goes through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from fimaudit.errors import OutputPathError
from fimaudit.interrupts import Interrupted, stop_signals_held

logger = logging.getLogger(__name__)

Identity = tuple[int, int]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _cannot_write(target: Path, exc: OSError) -> OutputPathError:
    """One-line error for an OSError while writing ``target`` (disk full, file too large, ...)."""
    return OutputPathError(f"cannot write {target}: {exc.strerror or exc}")


def _location(target: Path) -> str:
    """Where ``target`` lives, with the folder's symlinks resolved (the name itself is not followed)."""
    return os.path.join(os.path.realpath(target.parent), target.name)


def _lstat(target: Path) -> os.stat_result | None:
    try:
        return os.lstat(target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _cannot_write(target, exc) from exc


class StagedFile:
    """A temporary file in the destination folder that becomes ``target`` when the set commits."""

    def __init__(self, target: Path, temporary: Path, stream: BinaryIO) -> None:
        self.target = target
        self.temporary = temporary
        self._stream: BinaryIO | None = stream
        self.renamed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; a full disk or a file-size limit is a one-line OutputPathError."""
        if self._stream is None:
            raise ValueError(f"{self.target}: the temporary file is already closed")
        try:
            self._stream.write(data)
        except OSError as exc:
            raise _cannot_write(self.target, exc) from exc

    def finish(self) -> None:
        """Flush to the disk and close (done before any output is renamed into place)."""
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        try:
            stream.flush()
            os.fsync(stream.fileno())
        except OSError as exc:
            _close_quietly(stream)
            raise _cannot_write(self.target, exc) from exc
        try:
            stream.close()
        except OSError as exc:
            raise _cannot_write(self.target, exc) from exc

    def discard(self) -> None:
        """Close and remove the temporary file (nothing of it stays behind)."""
        if self._stream is not None:
            _close_quietly(self._stream)
            self._stream = None
        if not self.renamed:
            _unlink_quietly(self.temporary)


def _close_quietly(stream: BinaryIO) -> None:
    with contextlib.suppress(OSError):  # the data is being thrown away; a failed flush of it does not matter
        stream.close()


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # cleanup must not hide the error that caused it; say what stayed behind
        logger.warning("could not remove the temporary file %s: %s", path, exc.strerror or exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Stopped(Exception):
    """A stop signal came in while the outputs were being renamed into place."""


class OutputSet:
    """The files one command writes, written as one transaction.

    Declare the outputs and the inputs (``OutputSet(outputs, inputs)``), ``check()`` before the long
    computation, stage every output (``write`` for rendered text, ``stage`` for a stream written
    chunk by chunk), then ``commit(more_inputs)``. Used as a context manager, leaving the block
    without a commit (an error, an interruption) removes every temporary file.
    """

    def __init__(self, outputs: Iterable[Any] = (), inputs: Iterable[Any] = ()) -> None:
        self.targets: list[Path] = [Path(path) for path in outputs if path]
        self._inputs: dict[Identity, str] = {}
        self._staged: list[StagedFile] = []
        self._committed = False
        self.add_inputs(inputs)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self._committed:
            self.discard()

    def add_inputs(self, paths: Iterable[Any]) -> None:
        """Record files the run reads. Missing ones are skipped: whoever reads them reports that."""
        for path in paths:
            if not path:
                continue
            try:
                info = os.stat(path)  # follows symlinks: the identity of the file actually read
            except (OSError, ValueError):
                continue
            self._inputs.setdefault((info.st_dev, info.st_ino), str(path))

    def check(self) -> None:
        """Refuse, before anything is written, every output that breaks a rule (module docstring)."""
        locations: dict[str, Path] = {}
        identities: dict[Identity, Path] = {}
        for target in self.targets:
            info = self._check_one(target)
            location = _location(target)
            if location in locations:
                raise OutputPathError(
                    f"cannot write {target}: it is another output of this run ({locations[location]})"
                )
            locations[location] = target
            if info is not None:
                identity = (info.st_dev, info.st_ino)
                if identity in identities:  # two names (hard links) of one file
                    raise OutputPathError(
                        f"cannot write {target}: it is another output of this run ({identities[identity]})"
                    )
                identities[identity] = target

    def _check_one(self, target: Path) -> os.stat_result | None:
        folder = target.parent
        if not target.name or target.name in (".", ".."):
            raise OutputPathError(f"{target} is a folder; give a file name")
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise OutputPathError(f"cannot write {target}: {folder} {what}")
        info = _lstat(target)
        if info is not None:
            if stat.S_ISDIR(info.st_mode):
                raise OutputPathError(f"{target} is a folder; give a file name")
            if stat.S_ISLNK(info.st_mode):
                raise OutputPathError(
                    f"cannot write {target}: it is a symbolic link; fimaudit neither follows nor replaces "
                    "one (give the path of a regular file)"
                )
            if not stat.S_ISREG(info.st_mode):
                raise OutputPathError(
                    f"cannot write {target}: it is {_kind(info.st_mode)}, not a regular file; fimaudit only "
                    "replaces regular files"
                )
            source = self._inputs.get((info.st_dev, info.st_ino))
            if source is not None:
                same = "" if _location(Path(source)) == _location(target) else f" ({source})"
                raise OutputPathError(f"cannot write {target}: it is an input of this run{same}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {target}: folder {folder} is not writable")
        if info is not None and not os.access(target, os.W_OK):
            raise OutputPathError(f"cannot write {target}: the file is not writable")
        return info

    def stage(self, path: Any) -> StagedFile:
        """A temporary file for the declared output ``path``, to be written by the caller."""
        target = Path(path)
        if target not in self.targets:
            raise ValueError(f"{target} was not declared as an output of this set")
        if any(staged.target == target for staged in self._staged):
            raise ValueError(f"{target} is already staged")
        try:
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise _cannot_write(target, exc) from exc
        staged = StagedFile(target, Path(name), os.fdopen(handle, "wb"))
        self._staged.append(staged)
        try:
            # mkstemp creates the file 0600; an output is an ordinary file: honour the umask.
            os.chmod(handle, 0o666 & ~_umask())
        except OSError as exc:
            raise _cannot_write(target, exc) from exc
        return staged

    def write(self, path: Any, content: str | bytes) -> None:
        """Stage ``content`` (already rendered) as the output ``path``, flushed to the disk."""
        data = content.encode("utf-8") if isinstance(content, str) else content
        staged = self.stage(path)
        staged.write(data)
        staged.finish()

    def commit(self, inputs: Iterable[Any] = ()) -> None:
        """Check again (with the inputs only known now), then rename every output into place.

        Either every output appears, or none does and whatever was at those paths is unchanged.
        """
        self.add_inputs(inputs)
        try:
            missing = [str(target) for target in self.targets if not any(s.target == target for s in self._staged)]
            if missing:
                raise ValueError(f"outputs declared but never written: {', '.join(missing)}")
            for staged in self._staged:
                staged.finish()
            self.check()
            with stop_signals_held() as stopped:
                self._rename_all(stopped)
            if stopped:  # the signal's handler did not raise (ignored): still, nothing was written
                raise Interrupted(stopped[0])
        except BaseException:
            with stop_signals_held():
                self.discard()
            raise
        self._committed = True
        for folder in {staged.target.parent for staged in self._staged}:
            _fsync_folder(folder)
        for staged in self._staged:
            logger.info("wrote %s", staged.target)

    def _rename_all(self, stopped: list[int]) -> None:
        """Rename every temporary into place, or (on an error or a stop signal) none of them."""
        done: list[tuple[StagedFile, Path | None, bool]] = []
        current: StagedFile | None = None
        try:
            for current in self._staged:
                if stopped:
                    raise _Stopped
                backup, moved = self._keep_old(current)
                done.append((current, backup, moved))
                os.replace(current.temporary, current.target)
                current.renamed = True
            if stopped:  # came in during the last rename: the old files are still at hand
                raise _Stopped
        except BaseException as exc:
            _roll_back(done)
            self.discard()
            if isinstance(exc, _Stopped):
                return  # the held signal is delivered when the section ends
            if isinstance(exc, OSError) and current is not None:
                raise _cannot_write(current.target, exc) from exc
            raise
        for _staged, backup, _moved in done:
            if backup is not None:
                _unlink_quietly(backup)

    def _keep_old(self, staged: StagedFile) -> tuple[Path | None, bool]:
        """Keep the file now at ``staged.target`` under a second name until the set commits.

        A hard link leaves the old file in place; where links are not possible it is moved aside.
        Returns (the backup's path or None when there was no file, whether it was moved).
        """
        backup = Path(f"{staged.temporary}.old")
        try:
            os.link(staged.target, backup, follow_symlinks=False)
            moved = False
        except FileNotFoundError:
            return None, False
        except OSError:
            os.rename(staged.target, backup)
            moved = True
        info = os.lstat(backup)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) in self._inputs:
            # Replaced after the check (a race): put it back untouched and refuse.
            if moved:
                os.rename(backup, staged.target)
            else:
                _unlink_quietly(backup)
            raise OutputPathError(f"cannot write {staged.target}: it changed while fimaudit was writing")
        return backup, moved

    def discard(self) -> None:
        """Remove every temporary file not yet renamed into place."""
        for staged in self._staged:
            staged.discard()


def _roll_back(done: list[tuple[StagedFile, Path | None, bool]]) -> None:
    """Put back what was at each output path before the renames started."""
    for staged, backup, moved in reversed(done):
        try:
            if backup is not None and (staged.renamed or moved):
                os.replace(backup, staged.target)
            elif staged.renamed:
                os.unlink(staged.target)
            elif backup is not None:
                os.unlink(backup)
        except OSError as exc:
            logger.error("could not restore %s: %s", staged.target, exc.strerror or exc)
        staged.renamed = False


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (best effort: not every file system lets a folder be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def check_outputs(inputs: Iterable[Any], outputs: Iterable[Any]) -> None:
    """Fail now, not after an hour of compute, when an output breaks a rule (module docstring)."""
    OutputSet(outputs, inputs).check()


def write_atomic(path: Any, content: str | bytes, inputs: Iterable[Any] = ()) -> None:
    """Write one output file through the transaction (a set of one)."""
    with OutputSet([path], inputs) as outputs:
        outputs.check()
        outputs.write(path, content)
        outputs.commit()


def json_text(document: Any) -> str:
    """The JSON text fimaudit writes: sorted keys for stable diffs, NaN refused (not valid JSON)."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=_to_builtin) + "\n"


def _to_builtin(value: Any) -> Any:
    """Numpy scalars and arrays to plain Python for the JSON encoder."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
