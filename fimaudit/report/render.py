"""Render the HTML report from the prepared view with jinja2 (autoescape on, StrictUndefined).

Everything taken from a model (names, producer, metadata) is untrusted text: autoescaping turns
a ``<script>`` in a model's metadata into visible text, never into markup.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from fimaudit.report.images import Picture
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


def render_report(document: dict[str, Any], pictures: dict[int, Picture] | None = None, pictures_note: str = "") -> str:
    """The self-contained HTML report of one audit.

    ``pictures`` (sample and eigenvector images, keyed by sample index) travel beside the document
    because pixel arrays do not belong in the JSON.
    """
    view = build_view(document, pictures, pictures_note)
    return environment().get_template("report.html.j2").render(view=view)


def render_comparison(document: dict[str, Any]) -> str:
    """The self-contained HTML report of ``fimaudit compare``."""
    from fimaudit.report.compare_report import build_comparison_view

    return environment().get_template("compare.html.j2").render(view=build_comparison_view(document))
