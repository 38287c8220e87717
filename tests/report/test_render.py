"""Rendering of the HTML report: sections in order, self-contained, no arithmetic in templates,
optional sections shown when present and said to be "not computed" when absent."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from fimaudit.report.document import build_document
from fimaudit.report.outputs import html_report
from fimaudit.report.render import render_report
from fimaudit.results import Bound
from tests.report.helpers import audit_mlp, gradient_check, rejudged

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture(scope="module")
def audited():
    result = audit_mlp(samples=8, threshold=3.0)
    return result, build_document(result)


@pytest.fixture(scope="module")
def html(audited) -> str:
    result, document = audited
    return html_report(result, document)


def test_sections_appear_in_the_issue_order_with_the_verdict_first(html: str) -> None:
    headings = ["FAIL", "Identity", "Environment", "Preprocessing assumptions", "Method", "Results",
                "Per-class breakdown", "Most sensitive samples", "Samples and their top Fisher eigenvector",
                "Analytic bound versus measured", "Architecture found", "Per-layer contributions",
                "Sanity checks", "Limitations"]
    body = html[html.index("</nav>"):]
    positions = [body.find(f">{heading}<") for heading in headings]
    assert all(p > 0 for p in positions), dict(zip(headings, positions))
    assert positions == sorted(positions)


def test_report_is_self_contained_and_printable(html: str) -> None:
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html), "only data: images and in-page links"
    assert "<script" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert "@media print" in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 12 and all(uri.startswith("data:image/png;base64,") for uri in images)


def test_identity_method_and_numbers_are_shown(audited, html: str) -> None:
    _, document = audited
    assert document["model"]["sha256"] in html
    assert "pytorch" in html and "CPUExecutionProvider" in html
    assert "finite-difference relative step" in html
    assert f"{document['summary']['max']:.4g}" in html
    assert "is above the threshold 3" in html


def without_sample_bounds(result):
    return tuple(dataclasses.replace(sample, bound=None) for sample in result.samples)


def test_absent_sections_say_not_computed(audited) -> None:
    base, _ = audited
    document = build_document(rejudged(base, bound=None, samples=without_sample_bounds(base)))
    document.pop("dataset")  # as an audit that no stage wrote a dataset view for
    html = render_report(document)
    for text in ("not computed: no per-class breakdown", "not computed: no analytic bound",
                 "not computed: per-layer contributions", "analytic bound: not computed"):
        assert text in html


def test_per_class_breakdown_from_the_dataset_view(audited, html: str) -> None:
    _, document = audited
    per_class = document["dataset"]["per_class"]
    assert per_class and "<th>Class</th>" in html
    for row in per_class:
        assert f"<td>{row['class']}</td><td>{row['count']}</td>" in html


def test_sections_written_by_other_stages_are_shown(audited) -> None:
    base, _ = audited
    top = max(s.value for s in base.samples)
    bound = Bound(top * 40, details={
        "statement": "lipschitz product",
        "per_layer": [{"name": "Gemm_0", "op": "Gemm", "factor": 3.5}, {"name": "Tanh_1", "op": "Tanh", "factor": 1.0}],
        "blocks": [{"kind": "linear", "nodes": ["n"] * 200}], "problems": [], "reason": None})
    samples = tuple(dataclasses.replace(s, bound=Bound(s.value * 2)) for s in base.samples)
    result = rejudged(base, bound=bound, samples=samples, architecture={"family": "mlp", "blocks": 2},
                      gradients="graph", gradient_check=gradient_check("passed"))
    document = build_document(result)
    document["dataset"] = {"per_class": [{"class": 3, "count": 2, "median": 0.5}], "note": "by predicted class",
                           "summary": {"count": 8}, "most_sensitive": []}
    html = render_report(document)
    assert "lipschitz product" in html and "Gemm_0" in html and "Bound / measured" in html and "40x" in html
    assert "<h3>Blocks</h3>" in html and "(cut; full in the JSON)" in html
    assert "Blocks" in html and ">mlp<" in html
    assert "by predicted class" in html and "<th>Median</th>" in html
    assert "per-sample bound" in html
    assert 'class="check-passed">passed' in html
    assert "not computed: no analytic bound" not in html and "not computed: no per-class" not in html


def test_failed_check_shows_inconclusive_in_the_verdict(audited) -> None:
    base, _ = audited
    html = render_report(build_document(rejudged(base, gradients="graph", gradient_check=gradient_check("failed"))))
    assert 'class="verdict status-inconclusive"' in html and ">INCONCLUSIVE<" in html
    assert 'class="check-failed">FAILED' in html


def test_non_image_inputs_say_why_there_are_no_pictures(audited) -> None:
    _, document = audited
    html = render_report(document, None, "not drawn: samples of shape [4] are not images")
    assert "not drawn: samples of shape [4] are not images" in html and "<img" not in html


def _template_expressions() -> list[tuple[str, str]]:
    found = []
    for template in TEMPLATES.glob("*.j2"):
        text = template.read_text()
        found += [(template.name, expr) for expr in re.findall(r"\{\{(.*?)\}\}|\{%(.*?)%\}", text, re.S) for expr in expr if expr]
    return found


def test_templates_do_no_arithmetic_and_mark_nothing_safe() -> None:
    expressions = _template_expressions()
    assert len(expressions) > 50
    for name, expression in expressions:
        # String literals may hold '-' or '/'; a leading or trailing '-' is whitespace control.
        stripped = re.sub(r"'[^']*'|\"[^\"]*\"", "''", expression).strip().strip("-")
        assert not re.search(r"[-+*/%]", stripped), f"arithmetic in {name}: {expression}"
        assert "safe" not in stripped and "Markup" not in stripped, f"unescaped output in {name}: {expression}"


def test_a_bound_without_value_says_why(audited) -> None:
    base, _ = audited
    bound = Bound(None, details={"reason": "gates need a bounded input domain", "per_layer": []})
    document = build_document(rejudged(base, bound=bound, samples=without_sample_bounds(base)))
    html = render_report(document)
    assert "none valid for every input: gates need a bounded input domain" in html
    assert "not computed: the bound does not list per-layer contributions" in html
    assert [c for c in document["checks"] if c["name"] == "bound_check"][0]["status"] == "not_computed"
