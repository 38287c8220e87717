"""One computation on a thread of its own, started early and collected later.

Why: the model-wide part of the certified bounds (every layer's spectral norm: the weights
only, no sample) is pure numpy/LAPACK on one BLAS thread, while the stages it used to follow
(deriving the gradient graphs, building their sessions) are mostly single-threaded Python. On
a two-core machine the audit waited for the bounds after the samples: 19-36% of a first audit
of ResNet-18 or VGG-11. Started as soon as the logits model exists, the bounds use the core
those stages leave idle, and the audit only waits for what is left of them. The thread keeps
the process's priority: at nice 19 (Linux threads have their own) it held the GIL while
descheduled and the audits were slower than without it (ResNet-18 5.5-6.0 s against 5.0-5.2 s).
Pausing it while the samples and the gradient check run ONNX Runtime on both cores was tried
and not kept: the audits were no faster (benchmarks/README.md, bounds beside the audit).

Python 3.11's ``Thread.join`` interrupted by a signal marks a running thread as stopped
(bpo-45274; see runtime.run_session), so the owner waits on an Event, in short waits that
Ctrl-C and SIGTERM interrupt. ``cancel`` asks the computation to stop at its next check (the
bound engine checks before every layer rule) and waits briefly for it: an audit that fails or
is interrupted does not leave a thread computing behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: How long ``cancel`` waits for the computation to reach its next check.
CANCEL_GRACE_S = 10.0


class BackgroundTask(Generic[T]):
    """``compute(cancelled)`` on a daemon thread; ``result()`` waits for it and returns or raises."""

    def __init__(self, compute: Callable[[Callable[[], bool]], T], name: str = "fimaudit-background") -> None:
        self._compute = compute
        self._stop = threading.Event()
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> BackgroundTask[T]:
        """Start the thread (once); returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._value = self._compute(self._stop.is_set)
        except BaseException as exc:  # handed to the owner, who raises it in its own thread
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> T:
        """The computation's value (waiting for it), or the exception it raised."""
        while not self._done.wait(0.1):
            pass
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Ask the computation to stop at its next check and wait (briefly) until it has."""
        self._stop.set()
        self._done.wait(CANCEL_GRACE_S)

    @property
    def running(self) -> bool:
        """True until the computation has returned or raised."""
        return not self._done.is_set()
