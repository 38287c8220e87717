"""Names from a model never reach the terminal or the HTML report as control characters.

A model's names can hold OSC 52 (write the user's clipboard), OSC 0 (window title), CSI (colours,
cursor moves, hiding text), C1 controls, NUL and bidi overrides (U+202E reverses what follows).
``fimaudit inspect`` and error messages show each as a visible escape; the HTML report shows
them as visible text too (autoescaping alone would pass them through raw).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fimaudit.cli import main, one_line
from fimaudit.text import terminal_line, visible
from tests.hostile import models

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"
OSC0 = "\x1b]0;pwned\x07"
CSI = "\x1b[2J\x1b[31m"
BIDI = "\u202e\u2066"
PAYLOAD = OSC52 + OSC0 + CSI + BIDI + "\x9b\x00"
# Raw bytes that must never be printed (UTF-8): ESC, BEL, NUL, C1 CSI, RLO, LRI.
FORBIDDEN = [b"\x1b", b"\x07", b"\x00", "\x9b".encode(), "\u202e".encode(), "\u2066".encode()]


def _raw_controls(data: bytes) -> list[bytes]:
    return [item for item in FORBIDDEN if item in data]


def test_visible_escapes_every_control_and_bidi_character() -> None:
    text = "a\x1b[31mb\u202ec\u2069d\x85e\x00f\u200bg\nh\ti"
    assert visible(text) == "a\\x1b[31mb\\u202ec\\u2069d\\x85e\\x00f\\u200bg\\nh\\ti"
    assert visible(text, keep="\n\t").endswith("g\nh\ti")
    assert visible("plain ascii and ünïcödé ✓") == "plain ascii and ünïcödé ✓"
    assert terminal_line("one\ntwo\x1b") == "one two\\x1b"
    assert one_line("  tensor 'x\u202e'\n") == "tensor 'x\\u202e'"


def _model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(models.hostile_names(PAYLOAD).SerializeToString())
    return path


def test_inspect_prints_no_raw_escape_or_bidi_character(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(_model(tmp_path))])
    assert result.exit_code == 0, result.output
    assert _raw_controls(result.stdout_bytes) == []
    assert f"x{visible(PAYLOAD)}: float32 [N, 4]" in result.stdout  # shown, escaped
    assert "\\x1b]52;c;" in result.stdout and "\\u202e" in result.stdout
    assert f"producer:    producer{visible(PAYLOAD)}" in result.stdout


def test_error_messages_escape_names(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(_model(tmp_path)), "--input", f"nope{PAYLOAD}"])
    assert result.exit_code == 2
    assert _raw_controls(result.stderr_bytes) == []
    assert result.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp_path = tmp_path_factory.mktemp("html")
    report = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["audit", str(_model(tmp_path)), "--samples", "2", "--no-bounds", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert _raw_controls(result.stdout_bytes + result.stderr_bytes) == []
    return report.read_bytes().decode("utf-8")


def test_html_holds_no_raw_control_or_bidi_character(html: str) -> None:
    assert _raw_controls(html.encode("utf-8")) == []


def test_html_shows_them_visibly(html: str) -> None:
    escaped = visible(PAYLOAD)  # autoescaping leaves these ASCII escapes as they are
    for where in ("x", "logits", "producer", "doc", "key", "value"):
        assert f"{where}{escaped}" in html, where
