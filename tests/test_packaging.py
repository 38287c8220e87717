"""The wheel ships every package: pyproject.toml lists them one by one (fimaudit.templates lives
outside fimaudit/), so a new sub-package missing from the list would install without it and fail
at import time under the README's `pip install .` while every editable test run passed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "fimaudit").rglob("__init__.py")
    }
    assert found <= listed, f"missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert "fimaudit.templates" in listed
