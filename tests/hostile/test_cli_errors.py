"""The CLI's last resort: an unexpected exception is one line and exit 2; -v shows its traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import fimaudit.audit
from fimaudit.cli import main, one_line


@pytest.fixture
def crashing_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(config, progress=None, **hooks):
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(fimaudit.audit, "run_audit", crash)


def test_unexpected_exception_is_one_line_with_a_hint(crashing_audit, tmp_path) -> None:
    result = CliRunner().invoke(main, ["audit", "sample_models/mlp.onnx"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "fimaudit: error: internal error (ZeroDivisionError: a bug deep inside); rerun with -v for the "
        "traceback and report it"
    ]


def test_verbose_shows_the_traceback_and_still_exits_2(crashing_audit) -> None:
    result = CliRunner().invoke(main, ["-v", "audit", "sample_models/mlp.onnx"])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "ZeroDivisionError: a bug deep inside" in result.stderr


def test_usage_errors_are_one_line() -> None:
    result = CliRunner().invoke(main, ["audit", "--no-such-option"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("fimaudit: error: No such option")
    assert "--no-such-option" in result.stderr


def test_help_and_version_still_exit_0() -> None:
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert CliRunner().invoke(main, ["audit", "--help"]).exit_code == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain", "plain"), ("two\nlines", "two lines"), ("esc\x1b[31mred", "esc\\x1b[31mred"), ("tab\there", "tab\\there")],
)
def test_one_line(text: str, expected: str) -> None:
    assert one_line(text) == expected
