"""Privacy: an audit writes nothing outside the outputs it was asked for, nothing under the home
folder or the user's cache (ONNX Runtime's telemetry database and device id among them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"


def test_an_audit_writes_nothing_under_home_or_the_cache(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "PYTHONPATH": str(ROOT)}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # fimaudit must switch telemetry off by itself
    command = [sys.executable, "-m", "fimaudit", "audit", str(SAMPLES / "mlp.onnx"),
               "--data", str(SAMPLES / "digits_test.npy"), "--samples", "2",
               "--json", "audit.json", "--report", "audit.html"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(path.relative_to(home).as_posix() for path in home.rglob("*")) == []
    assert sorted(path.name for path in work.iterdir()) == ["audit.html", "audit.json"]
