"""Write what an audit produces: the JSON document, the HTML report and the Markdown summary.

One function per command so that the command line stays thin and every caller (CLI, tests)
writes the same files the same way. Everything is rendered before anything is written, and each
file is written atomically: a failure leaves no file at all rather than a partial set.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fimaudit.audit import AuditResult
from fimaudit.compare_audit import Comparison
from fimaudit.report.compare_report import DEFAULT_RTOL, build_comparison_document
from fimaudit.report.document import build_document
from fimaudit.report.images import audit_pictures
from fimaudit.report.render import render_comparison, render_report
from fimaudit.report.summary_markdown import summary_markdown
from fimaudit.report.view import most_sensitive_indices
from fimaudit.report.writing import json_text, write_atomic

logger = logging.getLogger(__name__)


def html_report(result: AuditResult, document: dict[str, Any]) -> str:
    """The HTML report of ``result``, with pictures of its most sensitive samples."""
    pictures, note = audit_pictures(result, most_sensitive_indices(document))
    return render_report(document, pictures, note)


def _write_all(outputs: list[tuple[str | None, Callable[[], str]]]) -> None:
    """Render every requested output, then write them (nothing is written if rendering fails)."""
    rendered = [(path, render()) for path, render in outputs if path]
    for path, text in rendered:
        write_atomic(path, text)
        logger.info("wrote %s", path)


def write_audit_outputs(
    result: AuditResult,
    json_path: str | None = None,
    report_path: str | None = None,
    summary_path: str | None = None,
) -> dict[str, Any]:
    """Build the document of ``result``, write the requested files, and return the document."""
    document = build_document(result)
    _write_all([
        (json_path, lambda: json_text(document)),
        (report_path, lambda: html_report(result, document)),
        (summary_path, lambda: summary_markdown(document)),
    ])
    return document


def write_comparison_outputs(
    comparison: Comparison,
    json_path: str | None = None,
    report_path: str | None = None,
    rtol: float = DEFAULT_RTOL,
    statistic: str = "median",
) -> dict[str, Any]:
    """Build the comparison document, write the requested files, and return the document."""
    document = build_comparison_document(comparison, rtol=rtol, statistic=statistic)
    _write_all([
        (json_path, lambda: json_text(document)),
        (report_path, lambda: render_comparison(document)),
    ])
    return document
