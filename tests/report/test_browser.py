"""End to end in a real browser: headless Chromium opens the reports and logs no console message.

The reports carry a strict Content-Security-Policy (no scripts, nothing fetched, images only as
data: URIs), so anything that is not self-contained shows up as a console message; the negative
control below proves that such a message is caught. Skipped when Chromium is not installed
(Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fimaudit.audit import AuditConfig
from fimaudit.compare_audit import run_comparison
from fimaudit.report.compare_report import build_comparison_document
from fimaudit.report.document import build_document
from fimaudit.report.outputs import html_report
from fimaudit.report.render import render_comparison
from tests.conftest import SAMPLES
from tests.report.helpers import DIGITS, audit_mlp

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install -y chromium)")]

CONSOLE = re.compile(r"CONSOLE[(:].*")


def chromium(page: Path, profile: Path, *options: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *options, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def open_page(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after loading ``page``, and every console message Chromium logged."""
    run = chromium(page, profile, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, CONSOLE.findall(run.stderr)


@pytest.fixture(scope="module")
def audit_report(tmp_path_factory) -> Path:
    result = audit_mlp(samples=16, threshold=5.0)
    path = tmp_path_factory.mktemp("browser") / "report.html"
    path.write_text(html_report(result, build_document(result)))
    return path


def test_audit_report_renders_without_console_messages(audit_report: Path, tmp_path: Path) -> None:
    dom, console = open_page(audit_report, tmp_path / "profile")
    assert console == []
    assert "Fisher sensitivity audit" in dom and ">FAIL<" in dom
    assert dom.count("<img") == 12 and "<svg" in dom


def test_comparison_report_renders_without_console_messages(tmp_path: Path) -> None:
    models = [str(SAMPLES / name) for name in ("mlp.onnx", "mlp_softmax.onnx", "vgg_small.onnx")]
    comparison = run_comparison(models, AuditConfig(model_path="", data_path=DIGITS, samples=6, gradients="fd"))
    page = tmp_path / "compare.html"
    page.write_text(render_comparison(build_comparison_document(comparison)))
    dom, console = open_page(page, tmp_path / "profile")
    assert console == []
    assert "Fisher sensitivity comparison" in dom and "vgg_small.onnx" in dom


def test_a_report_that_fetches_something_is_caught(audit_report: Path, tmp_path: Path) -> None:
    """Negative control: an external image in the page is blocked and logged, so the check can fail."""
    tampered = tmp_path / "tampered.html"
    tampered.write_text(audit_report.read_text().replace("<body>", '<body><img src="https://example.invalid/x.png">', 1))
    _, console = open_page(tampered, tmp_path / "profile")
    assert any("example.invalid" in message for message in console)


def test_screenshot_of_the_report(audit_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run = chromium(audit_report, tmp_path / "profile", "--hide-scrollbars", "--window-size=1100,1400", f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 1400) and len(data) > 20_000


def test_report_prints_to_pdf(audit_report: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    run = chromium(audit_report, tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert CONSOLE.findall(run.stderr) == []
    data = pdf.read_bytes()
    pages = re.findall(rb"/Type\s*/Page(?!s)", data)
    assert data.startswith(b"%PDF") and len(pages) >= 2
