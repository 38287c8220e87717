"""One paragraph of Markdown for a pull-request comment (``--summary PATH``).

The verdict comes first, then the numbers a reviewer needs to judge it, then the checks, so the
paragraph reads on its own. Text taken from the model or the data path is put in code spans with
backticks and line breaks removed, so a hostile file name cannot inject Markdown or HTML.
"""

from __future__ import annotations

from typing import Any

from fimaudit.report.formatting import file_name, fmt
from fimaudit.report.view import CHECK_LABELS, VERDICT_HEADLINES
from fimaudit.verdict import CHECKS


def code_span(text: str) -> str:
    """``text`` as an inline code span that cannot be broken out of."""
    cleaned = " ".join(str(text).replace("`", "'").split())
    return f"`{cleaned}`"


def summary_markdown(document: dict[str, Any]) -> str:
    """The audit in one Markdown paragraph (ends with a newline)."""
    verdict = document["verdict"]
    summary = document["summary"]
    model = document["model"]
    method = document["method"]
    data = document["data"]
    headline = VERDICT_HEADLINES[verdict["status"]]
    source = "synthetic N(0, 1) inputs" if data.get("synthetic") else code_span(file_name(data["source"]))
    # Each check as a sentence names it (fimaudit/verdict.py's table), never parsed from its title.
    checks = "; ".join(f"{CHECKS[check['name']][1]} {CHECK_LABELS[check['status']]}" for check in document["checks"])
    reason = " ".join(str(verdict["reason"]).split())
    sentences = [
        f"**fimaudit: {headline}** for {code_span(file_name(model['path']))} "
        f"(sha256 {code_span(model['sha256'][:12])}): {reason}.",
        f"lambda_max over {summary['count']} samples of {source}: median {fmt(summary['median'])}, "
        f"p95 {fmt(summary['p95'])}, max {fmt(summary['max'])} "
        f"(method {method['estimator']}, gradients {method['gradients']}, fimaudit {document['tool']['version']}).",
    ]
    if checks:
        sentences.append(f"Checks: {checks}.")
    return " ".join(sentences) + "\n"
