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
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

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
        """The shell's exit code for the signal: 128 + its number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise ``Interrupted`` in the main thread (no-op elsewhere).

    Returns the handlers they replace, for ``restore_handlers``: a process that calls the CLI as a
    library (a test runner) gets its own Ctrl-C handling back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _raise_interrupted) for signum in STOP_SIGNALS}


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers ``install_handlers`` replaced."""
    for signum, handler in previous.items():
        if handler is not None:  # None: installed outside Python, cannot be set back from here
            signal.signal(signum, handler)


@contextmanager
def stop_signals_held() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM back for a millisecond-long critical section (renaming outputs into place).

    Yields the list of stop signals that came in meanwhile; each is delivered again, to the handler
    of before, when the section ends. Why not a thread signal mask: ONNX Runtime's worker threads do
    not block the signals, so a process-directed SIGTERM is taken by one of them and Python still runs
    its handler in the main thread in the middle of the section. Here the Python-level handler itself
    is replaced by one that only records. Only for short sections: Ctrl-C must still work.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def record(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not None:  # None: a handler installed outside Python
                previous[signum] = signal.signal(signum, record)
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])  # the handler of before: Interrupted, or the default
