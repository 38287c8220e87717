"""An inotify watch on one file: proves a file was never opened, by any code in the process.

Python's audit hooks see only Python's own opens; onnx and ONNX Runtime open files from C++.
Linux inotify reports every open and read of the watched file, whoever makes it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

import pytest

IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x001, 0x020, 0o4000


class OpenWatch:
    """Counts opens and reads of one file (inotify), whoever makes them."""

    def __init__(self, path: Path) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            pytest.skip("inotify is not available")
        if self.libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_ACCESS) < 0:
            pytest.skip("cannot watch the file with inotify")

    def events(self) -> int:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return 0
        count, offset = 0, 0
        while offset < len(data):
            _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            offset += 16 + length
            count += 1
        return count

    def close(self) -> None:
        os.close(self.fd)
