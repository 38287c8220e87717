"""Opening a file inside a folder without following symlinks: the one way untrusted paths are opened.

Why one module: a model's external data files and an image list's files are both named by
untrusted input. A path checked first (symlinks resolved, inside the folder) can still be swapped
for a symlink before the open; opening it one component at a time with ``O_NOFOLLOW`` makes such a
swap fail (ELOOP/ENOTDIR) instead of opening a file outside the folder. ``O_NONBLOCK`` keeps a FIFO
from hanging the open; callers check ``fstat`` for a regular file afterwards.
"""

from __future__ import annotations

import os

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_plain(path: str | os.PathLike[str]) -> int:
    """Open ``path`` read-only, refusing a symlink as its last component."""
    return os.open(path, os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)


def open_beneath(root: str | os.PathLike[str], relative: str) -> int:
    """Open ``root/relative`` ('/'-separated) one component at a time, following no symlink on the way."""
    if os.open not in os.supports_dir_fd or not hasattr(os, "O_DIRECTORY"):
        return open_plain(os.path.join(root, *relative.split("/")))
    *folders, name = relative.split("/")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)
    try:
        for folder in folders:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(name, os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, dir_fd=directory)
    finally:
        os.close(directory)
