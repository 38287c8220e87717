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
    attack = document.get("attack_summary")
    if attack is not None:
        sentences.append(attack_sentence(attack))
    return " ".join(sentences) + "\n"


def attack_sentence(attack: dict[str, Any]) -> str:
    """The attack stage in one sentence: the correlation with its interval, robust accuracy per radius."""
    if attack["status"] != "run":
        return f"Attacks: not run ({' '.join(str(attack['reason']).split())})."
    norm = f"l{attack['norm']}"
    interval = (attack.get("intervals") or {}).get("spearman")
    rho = ("not computed" if attack["spearman"] is None else
           f"{fmt(attack['spearman'], 3)}" + (f" [{fmt(interval[0], 3)}, {fmt(interval[1], 3)}]" if interval else ""))
    robust = ", ".join(f"{fmt(100 * row['robust_accuracy'], 3)}% at {fmt(row['eps'])}"
                       for row in attack["success_rate_by_eps"])
    text = (f"Attacks ({norm}): {attack['verified']} of {attack['attempted']} samples have a verified adversarial "
            f"example; Spearman rho of lambda_max with 1/epsilon_min {rho}")
    return text + (f"; robust accuracy (upper bound) {robust}." if robust else ".")
