"""Ctrl-C and SIGTERM as one exception that every layer can clean up after.

Why not Python's default handlers: SIGTERM would kill the process without running a single
``finally`` (temporary files stay behind, outputs half-written), and SIGINT's KeyboardInterrupt is
turned by Click into a generic abort. fimaudit raises ``Interrupted`` for both, in the main thread,
so that output transactions roll back, ONNX Runtime runs are terminated (see runtime.py) and the
command line exits 130 (SIGINT) or 143 (SIGTERM) with one line on stderr.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Iterator
from contextlib import contextmanager

#: Signals that stop a run; the exit status is 128 + the signal number, as shells report it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The user (SIGINT) or the system (SIGTERM) asked fimaudit to stop.

    A BaseException, like KeyboardInterrupt: ``except Exception`` clauses must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_handlers() -> None:
    """Make SIGINT and SIGTERM raise ``Interrupted`` in the main thread (no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_interrupted)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a short critical section (renaming outputs into place).

    A signal that arrives inside is delivered when the section ends, so a set of renames is
    never cut in half. Only for sections that take milliseconds: the user's Ctrl-C must still work.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
