"""Every hostile input in the corpus gets its exit code and a one-line message, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fimaudit.cli import main
from tests.hostile.corpus import CASES, Case

LOG_LINE = re.compile(r"^fimaudit: (WARNING|INFO|DEBUG): ")


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    args = case.build(tmp_path)
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, (SystemExit, type(None))), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == case.exit_code, result.output
    if case.exit_code == 2:
        *logs, error = result.stderr.strip().splitlines()
        assert error.startswith("fimaudit: error: "), result.stderr
        assert all(LOG_LINE.match(line) for line in logs), result.stderr
        assert re.search(case.message, error), error
        assert result.stdout == ""
    else:
        assert re.search(case.message, result.output), result.output
