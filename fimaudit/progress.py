"""Progress of long audits on stderr: a bar with rate and ETA on a terminal, a line a minute in CI.

- stderr is a terminal: a tqdm bar (rate, ETA) that appears only once the work has taken more than
  :data:`BAR_DELAY_S` seconds, so short audits print nothing extra;
- stderr is not a terminal (CI logs, pipes): one line every :data:`LOG_INTERVAL_S` seconds,
  ``fimaudit: auditing samples: 1200/10000 (12%), 20.1/s, ETA 7m18s`` (a bar would fill the log
  with carriage returns);
- ``--quiet``: nothing.

Progress is presentation: it goes to stderr only, never into results, and never fails an audit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

#: Seconds before the bar appears (shorter audits show none).
BAR_DELAY_S = 3.0
#: Seconds between log lines when stderr is not a terminal.
LOG_INTERVAL_S = 60.0

Update = Callable[[int, int], None]
Finish = Callable[[], None]


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LogLines:
    """One progress line per interval (and none for work that ends within the first)."""

    def __init__(
        self, label: str, stream: IO[str], interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.label, self.stream, self.interval, self.clock = label, stream, interval, clock
        self.started = clock()
        self.last = self.started

    def update(self, done: int, total: int) -> None:
        """Print a line when an interval has passed since the last one."""
        now = self.clock()
        if now - self.last < self.interval or done <= 0:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        percent = 100.0 * done / total if total else 100.0
        self.stream.write(
            f"fimaudit: {self.label}: {done}/{total} ({percent:.0f}%), {rate:.3g}/s, ETA {_duration(eta)}\n"
        )
        self.stream.flush()

    def close(self) -> None:
        """Nothing to close: lines are complete when written."""


class Bar:
    """A tqdm bar on a terminal, created at the first update (it knows the total then)."""

    def __init__(self, label: str, stream: IO[str], delay: float = BAR_DELAY_S, unit: str = "sample") -> None:
        self.label, self.stream, self.delay, self.unit = label, stream, delay, unit
        self.bar: Any = None

    def update(self, done: int, total: int) -> None:
        """Move the bar to ``done`` of ``total``."""
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=self.label,
                file=self.stream,
                delay=self.delay,
                unit=self.unit,
                dynamic_ncols=True,
                leave=False,
            )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()


def reporter(
    label: str, quiet: bool = False, stream: IO[str] | None = None, unit: str = "sample"
) -> tuple[Update, Finish]:
    """``(update(done, total), finish())`` for ``label``: a bar, log lines, or nothing (see the module doc).

    ``unit``: what the bar counts (samples, or the gradient check's rounds).
    """
    out = stream if stream is not None else sys.stderr
    if quiet:
        return (lambda done, total: None), (lambda: None)
    try:
        terminal = out.isatty()
    except (AttributeError, ValueError):
        terminal = False
    shown: Bar | LogLines = Bar(label, out, unit=unit) if terminal else LogLines(label, out)
    return shown.update, shown.close
