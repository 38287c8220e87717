"""Write what an audit produces: the JSON document, the HTML report and the Markdown summary.

One function per command so that the command line stays thin and every caller (CLI, tests)
writes the same files the same way. Everything is rendered before anything is written, and the
files are written as one transaction (report/writing.py): all appear or none, and none of them
replaces a file the audit read (the model, its external data, the data file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fimaudit.audit import AuditResult
from fimaudit.compare import Consistency
from fimaudit.compare_audit import Comparison
from fimaudit.errors import InputError
from fimaudit.graph.loader import LoadedModel
from fimaudit.report.compare_report import DEFAULT_RTOL, build_comparison_document
from fimaudit.report.document import build_document
from fimaudit.report.images import Picture, audit_pictures, draw_samples
from fimaudit.report.render import render_comparison, render_report
from fimaudit.report.summary_markdown import summary_markdown
from fimaudit.report.view import PICTURED_SAMPLES, most_sensitive_indices
from fimaudit.report.writing import OutputSet, json_text

logger = logging.getLogger(__name__)


def html_report(result: AuditResult, document: dict[str, Any]) -> str:
    """The HTML report of ``result``, with pictures of its most sensitive samples."""
    pictures, note = audit_pictures(result, most_sensitive_indices(document))
    if result.attack is None:
        return render_report(document, pictures, note)
    from fimaudit.report.attack_pictures import adversarial_pictures

    attacked, attacked_note = adversarial_pictures(result, PICTURED_SAMPLES)
    return render_report(document, pictures, note, attacked, attacked_note)


def model_files(loaded: LoadedModel) -> list[Path]:
    """The files a loaded model was read from: the .onnx file and each external-data file."""
    folder = Path(loaded.path).parent
    return [Path(loaded.path), *(folder / location for location in loaded.external_data_files)]


def refuse_outputs_over(outputs: OutputSet) -> Callable[[LoadedModel], None]:
    """The ``on_loaded`` hook of a command that writes ``outputs``.

    The loaded model's files (the .onnx and each external-data file, which only the loader knows)
    become inputs of the transaction and the outputs are checked again: an output over a weights
    file is refused before any data is read or anything runs.
    """

    def check(loaded: LoadedModel) -> None:
        outputs.add_inputs(model_files(loaded))
        outputs.check()

    return check


def audit_inputs(result: AuditResult) -> list[Path]:
    """Every file ``result``'s audit read: the model, each external-data file, the data file."""
    files = [Path(result.config.model_path), *model_files(result.prepared.loaded)]
    if result.config.data_path:
        files.append(Path(result.config.data_path))
    return files


def write_outputs(outputs: list[tuple[str | None, Callable[[], str | bytes]]], inputs: Iterable[Any]) -> None:
    """Render every requested output, then write them as one transaction that spares ``inputs``.

    Nothing is written when rendering fails; a failure while writing leaves no file either.
    """
    wanted = [(path, render) for path, render in outputs if path]
    if not wanted:
        return
    with OutputSet([path for path, _ in wanted], inputs) as files:
        files.check()
        rendered = [(path, render()) for path, render in wanted]
        for path, text in rendered:
            files.write(path, text)
        files.commit()


def write_audit_outputs(
    result: AuditResult,
    json_path: str | None = None,
    report_path: str | None = None,
    summary_path: str | None = None,
    adversarial_path: str | None = None,
) -> dict[str, Any]:
    """Build the document of ``result``, write the requested files, and return the document.

    ``adversarial_path`` (``--save-adversarial``): the verified adversarial examples as .npy.
    """
    document = build_document(result)
    write_outputs([
        (json_path, lambda: json_text(document)),
        (report_path, lambda: html_report(result, document)),
        (summary_path, lambda: summary_markdown(document)),
        (adversarial_path, lambda: adversarial_npy(result)),
    ], audit_inputs(result))
    return document


def adversarial_npy(result: AuditResult) -> bytes:
    """The verified adversarial examples as .npy bytes: the audited inputs' layout, NaN rows where none was found."""
    import io

    import numpy as np

    from fimaudit.attacks.stage import adversarial_rows

    if result.attack is None:
        raise InputError("--save-adversarial needs the attack stage (--attack)")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, adversarial_rows(result.samples, result.data.inputs), allow_pickle=False)
    return buffer.getvalue()


def write_comparison_outputs(
    comparison: Comparison,
    json_path: str | None = None,
    report_path: str | None = None,
    rtol: float = DEFAULT_RTOL,
    statistic: str = "median",
    consistency: Consistency | None = None,
) -> dict[str, Any]:
    """Build the comparison document, write the requested files, and return the document."""
    document = build_comparison_document(comparison, rtol=rtol, statistic=statistic, consistency=consistency)
    pictures, note = disagreement_pictures(comparison, document)
    inputs: list[Any] = [comparison.config.data_path]
    for outcome in comparison.outcomes:
        inputs += audit_inputs(outcome.result) if outcome.result is not None else [outcome.path]
    write_outputs([
        (json_path, lambda: json_text(document)),
        (report_path, lambda: render_comparison(document, pictures, note)),
    ], inputs)
    return document


def disagreement_pictures(comparison: Comparison, document: dict[str, Any]) -> tuple[dict[int, Picture], str]:
    """The inputs of the samples each pair disagrees on most, drawn from the data as given.

    Drawn from a model audited on the data in its own layout (a model whose data fimaudit permuted
    would show the permuted array); no eigenvectors: the pairs' models have one each.
    """
    indices = sorted({s["index"] for pair in document["agreement"]["pairs"] for s in pair["worst_samples"]})
    as_given = [o.result for o in comparison.outcomes if o.result is not None and o.layout is None]
    if not indices or not as_given:
        return {}, ""
    return draw_samples(as_given[0].data.inputs, {}, indices)
