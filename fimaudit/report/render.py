"""Render the HTML report from the prepared view with jinja2 (autoescape on, StrictUndefined).

Everything taken from a model (names, producer, metadata) is untrusted text: autoescaping turns
a ``<script>`` in a model's metadata into visible text, never into markup.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from fimaudit.report.view import build_view


def _template_loader() -> jinja2.BaseLoader:
    """Templates from the installed package data, or from templates/ beside a source checkout."""
    try:
        packaged = resources.files("fimaudit.templates")
        if packaged.joinpath("report.html.j2").is_file():
            return jinja2.FileSystemLoader(str(packaged))
    except ModuleNotFoundError:
        pass
    return jinja2.FileSystemLoader(str(Path(__file__).resolve().parents[2] / "templates"))


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=_template_loader(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(document: dict[str, Any]) -> str:
    """The self-contained HTML report of one audit."""
    return environment().get_template("report.html.j2").render(view=build_view(document))
