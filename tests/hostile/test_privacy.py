"""Privacy: an audit writes nothing outside the outputs it was asked for and fimaudit's own cache.

Under the home folder (ONNX Runtime's telemetry database and device id among the candidates) the only
thing an audit may leave is the documented bounds cache (fimaudit/cache.py) in
``$XDG_CACHE_HOME/fimaudit``, and with ``--no-cache`` not even that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"


def _audit_in_fresh_home(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "PYTHONPATH": str(ROOT)}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # fimaudit must switch telemetry off by itself
    command = [sys.executable, "-m", "fimaudit", "audit", str(SAMPLES / "mlp.onnx"),
               "--data", str(SAMPLES / "digits_test.npy"), "--samples", "2",
               "--json", "audit.json", "--report", "audit.html", *extra]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in work.iterdir()) == ["audit.html", "audit.json"]
    return home, work


@pytest.mark.parametrize("cache", ["--cache", "--no-cache"])
def test_an_audit_writes_nothing_under_home_but_its_own_cache(tmp_path: Path, cache: str) -> None:
    home, _ = _audit_in_fresh_home(tmp_path, cache)
    files = sorted(path.relative_to(home).as_posix() for path in home.rglob("*") if path.is_file())
    if cache == "--no-cache":
        assert files == []
    else:
        assert files, "the bounds cache was not written (the check below would pass vacuously)"
        assert all(name.startswith(".cache/fimaudit/") for name in files), files
