"""Progress output: a line a minute off a terminal, a bar on one, nothing with --quiet."""

from __future__ import annotations

import io

from fimaudit.progress import Bar, LogLines, reporter


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_once_a_minute_with_rate_and_eta() -> None:
    stream, clock = io.StringIO(), _Clock()
    lines = LogLines("auditing samples", stream, interval=60, clock=clock)
    for done in range(1, 100):
        clock.now = done * 1.5  # 1.5 s a sample
        lines.update(done, 200)
    text = stream.getvalue().splitlines()
    assert len(text) == 2  # at 60 s and 120 s (of 148.5 s)
    assert text[0] == "fimaudit: auditing samples: 40/200 (20%), 0.667/s, ETA 4m00s"


def test_short_work_prints_nothing_and_quiet_prints_nothing() -> None:
    stream = io.StringIO()
    update, finish = reporter("x", stream=stream)
    update(5, 10)
    finish()
    assert stream.getvalue() == ""
    terminal = _Terminal()
    update, finish = reporter("x", quiet=True, stream=terminal)
    update(5, 10)
    finish()
    assert terminal.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar() -> None:
    terminal = _Terminal()
    update, finish = reporter("auditing", stream=terminal)
    assert isinstance(update.__self__, Bar)  # type: ignore[attr-defined]
    bar = Bar("auditing", terminal, delay=0)
    bar.update(3, 10)
    bar.update(7, 10)
    assert bar.bar.n == 7 and bar.bar.total == 10
    bar.close()
    assert "auditing" in terminal.getvalue() and "/10" in terminal.getvalue()


def test_the_bar_counts_in_the_unit_it_is_given() -> None:
    terminal = _Terminal()
    update, finish = reporter("checking gradients", stream=terminal, unit="round")
    assert update.__self__.unit == "round"  # type: ignore[attr-defined]
    bar = Bar("checking gradients", terminal, delay=0, unit="round")
    bar.update(2, 6)
    assert bar.bar.n == 2 and bar.bar.unit == "round"
    bar.close()
    assert "round/s" in terminal.getvalue()  # tqdm's first render (later ones depend on its refresh timer)
