r"""Render the HTML report from the prepared view with jinja2 (autoescape on, StrictUndefined).

Everything taken from a model (names, producer, metadata) is untrusted text: autoescaping turns
a ``<script>`` in a model's metadata into visible text, never into markup, and the environment's
``finalize`` writes control and bidi characters (NUL, ESC, U+202E, ...) as visible escapes
(``\u202e``), so a name cannot reorder or hide the text around it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from fimaudit.report.attack_pictures import AdversarialPicture
from fimaudit.report.images import Picture
from fimaudit.report.view import Row, build_view
from fimaudit.text import visible

# Kept as they are in HTML: whitespace the browser shows as whitespace (a doc string's lines).
_HTML_KEEP = "\n\t"


def _template_loader() -> jinja2.BaseLoader:
    """Templates from the installed package data, or from templates/ beside a source checkout."""
    try:
        packaged = resources.files("fimaudit.templates")
        if packaged.joinpath("report.html.j2").is_file():
            return jinja2.FileSystemLoader(str(packaged))
    except ModuleNotFoundError:
        pass
    return jinja2.FileSystemLoader(str(Path(__file__).resolve().parents[2] / "templates"))


def show_untrusted(value: Any) -> Any:
    """Every ``{{ value }}``: text with control or bidi characters made visible (then autoescaped).

    Markup (a macro's output) was built from values already shown this way and passes unchanged.
    """
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value, keep=_HTML_KEEP)
    return value


def environment() -> jinja2.Environment:
    """The jinja2 environment of every report: autoescape on, StrictUndefined, untrusted text made visible."""
    return jinja2.Environment(
        loader=_template_loader(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=show_untrusted,
    )


def weight_rows(document: dict[str, Any]) -> list[Row]:
    """The model's weights identity: the combined digest and each external-data file's hash."""
    model = document["model"]
    rows = []
    if model.get("combined_sha256"):
        rows.append(Row("Combined SHA-256 (model and external data)", model["combined_sha256"], code=True))
    for entry in model.get("external_data") or []:
        rows.append(
            Row(f"External data {entry['location']}", f"{entry['size']:,} bytes, sha256 {entry['sha256']}", code=True)
        )
    return rows


def render_report(
    document: dict[str, Any], pictures: dict[int, Picture] | None = None, pictures_note: str = "",
    attack_pictures: list[AdversarialPicture] | None = None, attack_pictures_note: str = "",
) -> str:
    """The self-contained HTML report of one audit.

    ``pictures`` (sample and eigenvector images, keyed by sample index) and ``attack_pictures``
    (inputs beside their adversarial examples) travel beside the document because pixel arrays
    do not belong in the JSON.
    """
    view = build_view(document, pictures, pictures_note, attack_pictures, attack_pictures_note)
    return environment().get_template("report.html.j2").render(view=view, weights=weight_rows(document))


def render_comparison(document: dict[str, Any], pictures: dict[int, Picture] | None = None, note: str = "") -> str:
    """The self-contained HTML report of ``fimaudit compare`` (``pictures``: the most-disagreeing inputs)."""
    from fimaudit.report.compare_report import build_comparison_view

    view = build_comparison_view(document, pictures, note)
    return environment().get_template("compare.html.j2").render(view=view)
