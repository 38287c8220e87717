"""The prepared view of a report: every number formatted and every chart laid out in Python.

Templates only place what is here (they do no arithmetic), so what a reviewer reads is exactly
what the JSON says, formatted once. Sections written by other stages (architecture, bound,
per-layer contributions, dataset breakdown, gradient check) are shown when the document holds
them and say "not computed" when it does not: a missing section is never silently left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fimaudit.report.charts import Chart, histogram, sample_chart
from fimaudit.report.formatting import MISSING, file_name, fmt, humanise, present, shape_text, table_from_records
from fimaudit.report.images import Picture
from fimaudit.report.sample_bound import bound_cell
from fimaudit.statistics import DISPLAY_NAMES, STATISTICS, bracket
from fimaudit.verdict import value_range

if TYPE_CHECKING:
    from fimaudit.report.attack_pictures import AdversarialPicture
    from fimaudit.report.attack_view import AttackSectionView
    from fimaudit.report.certify_view import CertifySectionView

NOT_COMPUTED_TEXT = "not computed"
TOP_SAMPLES = 10
PICTURED_SAMPLES = 6

VERDICT_HEADLINES = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "no_threshold": "NO THRESHOLD"}
CHECK_LABELS = {"passed": "passed", "failed": "FAILED", "not_decided": "not decided", "not_computed": "not computed",
                "not_applicable": "not applicable"}
# Names of gradient settings as a reviewer reads them.
SETTING_LABELS = {"fd_relative_step": "finite-difference relative step r (element i moves by r * max(1, |x_i|))"}
# Metadata keys that usually describe how inputs must be prepared.
PREPROCESSING_WORDS = ("mean", "std", "norm", "scale", "preprocess", "resize", "crop", "layout", "range", "channel")


@dataclass
class Row:
    """A label and its value (``code``: shown in monospace, as names and paths are)."""
    label: str
    value: str
    code: bool = False


@dataclass
class Table:
    """A titled table of prepared cells."""
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class VerdictView:
    """The verdict as the report's headline shows it."""
    status: str
    headline: str
    reason: str
    rows: list[Row]


@dataclass
class CheckView:
    """One check of the verdict: title, status, its label and the detail."""
    title: str
    status: str
    label: str
    detail: str


@dataclass
class PictureView:
    """A pictured sample and its top eigenvector, as data URIs, with caption and note."""
    index: int
    caption: str
    sample_uri: str
    eigenvector_uri: str | None
    width: int
    height: int
    note: str


@dataclass
class Section:
    """A section other stages fill: its rows and tables, or why it is empty."""

    rows: list[Row] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    missing: str = ""


@dataclass
class ReportView:
    """Everything the HTML template shows, prepared: the template does no arithmetic and makes no decisions."""
    title: str
    file_name: str
    created_at: str
    tool_version: str
    verdict: VerdictView
    identity: list[Row]
    metadata: list[Row]
    doc_string: str
    preprocessing: list[str]
    environment: list[Row]
    method: list[Row]
    summary: Table
    histogram: Chart
    per_class: Section
    dataset: Section
    top_samples: Table
    pictures: list[PictureView]
    pictures_note: str
    bound_chart: Chart
    bound: Section
    layers: Section
    architecture: Section
    checks: list[CheckView]
    limitations: list[str]
    # --wrt embeddings: per-token sensitivity of the most sensitive samples (one table each).
    tokens: list[Table] = field(default_factory=list)
    # --attack: the attack section (report/attack_view.py); None when no attacks ran.
    attack: AttackSectionView | None = None
    #: With true labels: accuracy, correct vs misclassified, lambda_max by true class (issue 13).
    labels: Section = field(default_factory=Section)
    # --certify: the local-certificate section (report/certify_view.py); None when not run.
    certify: CertifySectionView | None = None


def bound_value(bound: dict[str, Any] | None) -> float | None:
    """The value of a bound's JSON object (None when absent or when no bound could be certified)."""
    return None if bound is None else bound["value"]


def most_sensitive(samples: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The ``count`` samples with the largest lambda_max, largest first (ties by index)."""
    return sorted(samples, key=lambda s: (-float(s["lambda_max"]), s["index"]))[:count]


def most_sensitive_indices(document: dict[str, Any], count: int = PICTURED_SAMPLES) -> list[int]:
    """Indices of the ``count`` samples with the largest lambda_max (the ones pictured)."""
    return [s["index"] for s in most_sensitive(document["samples"], count)]


def verdict_view(document: dict[str, Any]) -> VerdictView:
    """The verdict's headline, reason and rows (threshold, statistic, value range)."""
    verdict = document["verdict"]
    status = verdict["status"]
    interval = verdict["interval"]
    rows = [
        Row("Statistic", f"{verdict['statistic']} of lambda_max over {len(document['samples'])} samples"),
        Row("Value", fmt(verdict["value"])),
        Row("Threshold (--fail-above)", "none" if verdict["threshold"] is None else fmt(verdict["threshold"])),
    ]
    if interval is not None:
        high = "no upper limit" if interval[1] is None else fmt(interval[1])
        rows.append(Row("Range if every interval holds", f"{fmt(interval[0])} to {high}"))
    return VerdictView(status, VERDICT_HEADLINES[status], verdict["reason"], rows)


def identity_rows(document: dict[str, Any]) -> list[Row]:
    """What the model is: path, hash, producer, input and output, opsets."""
    model = document["model"]
    inp, out = model["input"], model["output"]
    opsets = ", ".join(f"{domain} {version}" for domain, version in model.get("opsets", {}).items())
    rows = [
        Row("File", file_name(model["path"]), code=True),
        Row("Path", model["path"], code=True),
        Row("SHA-256", model["sha256"], code=True),
        Row("Producer", model["producer"] or MISSING),
        Row(
            "Opset / IR version",
            f"{model['opset']} / {model.get('ir_version', MISSING)}" + (f" ({opsets})" if opsets else ""),
        ),
        Row("Parameters", fmt(model.get("parameter_count"))),
        Row("Input", f"{inp['name']} {shape_text(inp['shape'])} {inp['dtype']}", code=True),
        Row(
            "Output",
            f"{out['name']}: {out['kind']} ({out.get('logits', '')}; {out.get('num_classes', '?')} classes)",
            code=True,
        ),
    ]
    if model.get("file_size") is not None:
        rows.insert(3, Row("File size", f"{model['file_size']:,} bytes"))
    return rows


def preprocessing_notes(document: dict[str, Any]) -> list[str]:
    """What the audit assumed about input preparation, and what the model's metadata hints."""
    data = document["data"]
    stats = data.get("statistics")
    notes = [
        "The data is fed to the model unchanged: lambda_max is with respect to the model's input tensor. "
        "fimaudit applies no normalisation, resizing or layout change of its own."
    ]
    spec = data.get("preprocess")
    if spec:  # image data (issue 13): the declared spec replaces "unchanged"
        steps = ", ".join(f"{key} {present(spec[key])}" for key in
                          ("channels", "resize", "center_crop", "scale_text", "mean", "std", "layout"))
        notes = [f"Image files were preprocessed by the spec from {spec['source']} ({steps}); lambda_max is with "
                 "respect to the model's input tensor, and in pixel space with respect to the pixels after resize "
                 "and crop (0..255)."]
    if stats:
        notes.append(
            f"Audited inputs range from {fmt(stats['min'])} to {fmt(stats['max'])} "
            f"(mean {fmt(stats['mean'])}, std {fmt(stats['std'])}); check that this is what the model was trained on."
        )
    hints = [f"{key} = {value}" for key, value in document["model"].get("metadata", {}).items()
             if any(word in key.lower() for word in PREPROCESSING_WORDS)]
    if hints:
        notes.append("The model's metadata mentions input preparation: " + "; ".join(hints))
    else:
        notes.append("The model's metadata states no preprocessing (no mean/std/scale/layout entries).")
    return notes


def environment_rows(document: dict[str, Any]) -> list[Row]:
    """Versions, seed and date: what decides the numbers, for reproducing them."""
    environment = document["environment"]
    rows = [Row(key, str(value)) for key, value in environment.items()]
    rows.append(Row("seed", str(document["method"]["seed"])))
    rows.append(Row("date", document["created_at"]))
    return rows


def method_rows(document: dict[str, Any]) -> list[Row]:
    """How lambda_max was computed: estimator, gradients and their settings, data."""
    method, data = document["method"], document["data"]
    kinds = sorted({s["kind"] for s in document["samples"]})
    settings = method.get("gradient_settings") or {}
    steps = "; ".join(f"{SETTING_LABELS.get(key, humanise(key))}: {present(value)}" for key, value in settings.items())
    source = "synthetic N(0, 1) samples" if data.get("synthetic") else data["source"]
    return [
        Row("Estimator", f"{method['estimator']} (values reported as: {', '.join(kinds)})"),
        Row("Gradient source", f"{method['gradients']}: {method.get('gradients_note', '')}"),
        Row("Step sizes", steps or "none (no finite-difference step in this gradient source)"),
        Row(
            "Budget",
            "default (the estimator's own)" if method.get("budget") is None else f"{method['budget']} per sample",
        ),
        Row("Data", f"{source}: {data['count']} samples of shape {shape_text(data.get('sample_shape'))}"),
        Row("Model evaluations", fmt(method.get("model_evaluations"))),
        Row("Time", f"{fmt(method.get('seconds'), 3)} s"),
    ]


def summary_table(document: dict[str, Any]) -> Table:
    """Quantiles of lambda_max; when values are not all exact, each with its possible range."""
    summary = document["summary"]
    samples = document["samples"]
    uncertain = any(s["kind"] != "exact" for s in samples)
    ranges = np.array([value_range(s["lambda_max"], s["kind"], s["interval"], s["diagnostics"].get("converged"))
                       for s in samples], dtype=np.float64)
    rows = []
    for key, label in DISPLAY_NAMES.items():
        row = [label, fmt(summary[key])]
        if uncertain:
            if key in STATISTICS:
                low, high = bracket(ranges[:, 0], ranges[:, 1], key)
                row.append(f"{fmt(low)} to {'no upper limit' if high is None else fmt(high)}")
            else:
                row.append("")
        rows.append(row)
    columns = ["Statistic", "Value"] + (["Range if every interval holds"] if uncertain else [])
    return Table("Quantiles of lambda_max", columns, rows)


def token_tables(document: dict[str, Any], count: int = 3) -> list[Table]:
    """Per-token sensitivity (norm of the top eigenvector's block) of the most sensitive samples."""
    tables = []
    for s in most_sensitive(document["samples"], count):
        values = s.get("token_sensitivity")
        if values is None:
            continue
        tokens = s.get("tokens") or [f"id {t}" for t in s.get("token_ids") or []] or [""] * len(values)
        mask = s.get("attention_mask") or [1] * len(values)
        rows = [[str(i), str(tokens[i]) if i < len(tokens) else "", "text" if mask[i] else "padding", fmt(v, 4)]
                for i, v in enumerate(values)]
        tables.append(Table(f"Sample {s['index']} (lambda_max {fmt(s['lambda_max'])})",
                            ["Position", "Token", "Kind", "Sensitivity"], rows))
    return tables


def top_samples_table(document: dict[str, Any]) -> Table:
    """The most sensitive samples, one row each (with their bounds when computed)."""
    ranked = most_sensitive(document["samples"], TOP_SAMPLES)
    has_bounds = any(s["bound"] is not None for s in document["samples"])
    # --certify: the tightest of the analytic bound and the certificates, with its set (issue 10)
    certified = any(s.get("certificates") for s in document["samples"])
    columns = ["Sample", "lambda_max", "Kind", "Interval", "Predicted class", "Top probability", "trace(F)"]
    if has_bounds or certified:
        columns.append("Bound (tightest, and its set)" if certified else "Bound")
    rows = []
    for s in ranked:
        row = [str(s["index"]), fmt(s["lambda_max"]), s["kind"], present(s["interval"]),
               str(s["predicted_class"]), fmt(s["top_prob"], 6), fmt(s["trace"])]
        if certified:
            row.append(bound_cell(s))
        elif has_bounds:
            row.append(fmt(bound_value(s["bound"])))
        rows.append(row)
    return Table(f"The {len(ranked)} most sensitive samples", columns, rows)


def generic_section(value: Any, missing: str) -> Section:
    """Rows for scalar entries and one table per list of records: any JSON object, shown faithfully."""
    if value is None or value == {} or value == []:
        return Section(missing=missing)
    section = Section()
    if isinstance(value, list):
        records = [item if isinstance(item, dict) else {"value": item} for item in value]
        columns, rows = table_from_records(records)
        section.tables.append(Table("", columns, rows))
        return section
    if not isinstance(value, dict):
        section.rows.append(Row("Value", present(value)))
        return section
    for key, item in value.items():
        if isinstance(item, list) and item and all(isinstance(entry, dict) for entry in item):
            columns, rows = table_from_records(item)
            section.tables.append(Table(humanise(key), columns, rows))
        else:
            section.rows.append(Row(humanise(key), present(item)))
    return section


# Parts of the dataset section the report already shows (quantiles, most sensitive samples).
DATASET_SHOWN_ELSEWHERE = ("summary", "most_sensitive")


def _split_dataset(dataset: Any) -> tuple[Any, Any]:
    """The dataset section's per-class entries, and what is not shown elsewhere in the report."""
    if not isinstance(dataset, dict):
        return None, dataset
    keys = [key for key in dataset if "class" in key.lower()]
    per_class = dataset[keys[0]] if len(keys) == 1 else {key: dataset[key] for key in keys} or None
    rest = {key: value for key, value in dataset.items() if key not in keys and key not in DATASET_SHOWN_ELSEWHERE}
    return per_class, rest


def bound_section(document: dict[str, Any]) -> tuple[Section, Section]:
    """The model-wide bound against the measured maximum, and its per-layer contributions.

    Lists of records under a key naming layers go to the per-layer section; other lists (blocks,
    problems) stay with the bound, and scalars and objects become rows.
    """
    bound = document["bound"]
    layers = Section(missing=f"{NOT_COMPUTED_TEXT}: per-layer contributions come with the analytic bound")
    if not bound:
        return Section(missing=f"{NOT_COMPUTED_TEXT}: no analytic bound was computed for this model"), layers
    value = bound_value(bound)
    measured = float(document["summary"]["max"])
    section = Section()
    layers.missing = f"{NOT_COMPUTED_TEXT}: the bound does not list per-layer contributions"
    if value is not None:
        section.rows.append(Row("Bound", fmt(value)))
        section.rows.append(Row("Largest measured lambda_max", fmt(measured)))
        if measured > 0:
            section.rows.append(Row("Bound / measured", f"{fmt(value / measured, 3)}x"))
    else:
        reason = bound.get("reason")
        section.rows.append(Row("Bound", f"none valid for every input{': ' + reason if reason else ''}"))
    for key, item in bound.items():
        if key in ("value", "reason"):
            continue
        if isinstance(item, list) and item and all(isinstance(entry, dict) for entry in item):
            columns, rows = table_from_records(item)
            target = layers if "layer" in key.lower() else section
            target.tables.append(Table(humanise(key), columns, rows))
            if target is layers:
                layers.missing = ""
        elif item not in (None, [], {}):
            section.rows.append(Row(humanise(key), present(item)))
    return section, layers


def architecture_section(document: dict[str, Any]) -> Section:
    """The recognised architecture family and its details, or why there is none."""
    architecture = document.get("architecture") or {}
    if not architecture or (architecture.get("family", "unknown") == "unknown" and len(architecture) == 1):
        return Section(rows=[Row("Family", "unknown")],
                       missing=f"{NOT_COMPUTED_TEXT}: no known architecture pattern was recognised or run")
    return generic_section(architecture, "")


def picture_views(document: dict[str, Any], pictures: dict[int, Picture] | None) -> list[PictureView]:
    """The pictures of the most sensitive samples (empty when none were made)."""
    if not pictures:
        return []
    by_index = {s["index"]: s for s in document["samples"]}
    views = []
    for index in most_sensitive_indices(document, len(pictures)):
        picture = pictures.get(index)
        if picture is None:
            continue
        sample = by_index[index]
        caption = (f"sample {index}: lambda_max {fmt(sample['lambda_max'])}, predicted class "
                   f"{sample['predicted_class']} (p = {fmt(sample['top_prob'], 4)})")
        views.append(PictureView(index, caption, picture.sample_uri, picture.eigenvector_uri,
                                 picture.display_width, picture.display_height, picture.note))
    return views


def check_views(document: dict[str, Any]) -> list[CheckView]:
    """The verdict's checks, each with its display label."""
    return [CheckView(c["title"], c["status"], CHECK_LABELS[c["status"]], c["detail"]) for c in document["checks"]]


def histogram_chart(document: dict[str, Any]) -> Chart:
    """Histogram of per-sample lambda_max with the median, p95 and threshold marked."""
    summary = document["summary"]
    markers = [("median", summary["median"], "median"), ("p95", summary["p95"], "p95")]
    threshold = document["verdict"]["threshold"]
    if threshold is not None:
        markers.append(("threshold", threshold, "threshold"))
    return histogram([s["lambda_max"] for s in document["samples"]], markers, extend_to=threshold)


def labels_section(document: dict[str, Any]) -> Section:
    """Accuracy, correct vs misclassified side by side, and lambda_max by true class (``labels``)."""
    labels = document.get("labels")
    if not labels:
        return Section(missing=f"{NOT_COMPUTED_TEXT}: the data has no labels (class folders, a CSV list or --labels)")
    stats = ("count", "median", "p95", "max")
    section = Section(rows=[Row("Accuracy", f"{labels['accuracy']:.1%} of {labels['count']} samples"),
                            Row("lambda_max in", f"{labels['space']} space")])
    section.tables.append(Table("Correct vs misclassified", ["samples", *stats],
                                [[name, *(present(labels[key][stat]) for stat in stats)]
                                 for name, key in (("correct", "correct"), ("misclassified", "misclassified"))]))
    section.tables.append(Table("By true class", ["class", "name", "samples", "accuracy", "median", "max"],
                                [[present(entry["class"]), present(entry["name"]), present(entry["count"]),
                                  f"{entry['accuracy']:.1%}", present(entry["lambda_max"]["median"]),
                                  present(entry["lambda_max"]["max"])] for entry in labels["by_true_class"]]))
    return section


def build_view(
    document: dict[str, Any], pictures: dict[int, Picture] | None = None, pictures_note: str = "",
    attack_pictures: list[AdversarialPicture] | None = None, attack_pictures_note: str = "",
) -> ReportView:
    """Everything the HTML template shows, from the JSON document (and pictures, kept out of it)."""
    from fimaudit.report.attack_view import attack_view  # it builds on this module's Row and Table
    from fimaudit.report.certify_view import certify_view

    model = document["model"]
    per_class, rest = _split_dataset(document.get("dataset"))
    bound, layers = bound_section(document)
    sample_bounds = {s["index"]: v for s in document["samples"] if (v := bound_value(s["bound"])) is not None}
    if not pictures and not pictures_note:
        pictures_note = "not drawn (no pictures were passed to the report)"
    return ReportView(
        tokens=token_tables(document),
        title=f"fimaudit report: {file_name(model['path'])}",
        file_name=file_name(model["path"]),
        created_at=document["created_at"],
        tool_version=document["tool"]["version"],
        verdict=verdict_view(document),
        identity=identity_rows(document),
        metadata=[Row(key, value) for key, value in model.get("metadata", {}).items()],
        doc_string=model.get("doc_string", ""),
        preprocessing=preprocessing_notes(document),
        environment=environment_rows(document),
        method=method_rows(document),
        summary=summary_table(document),
        histogram=histogram_chart(document),
        per_class=generic_section(per_class, f"{NOT_COMPUTED_TEXT}: no per-class breakdown in this audit"),
        dataset=generic_section(rest, "") if rest else Section(),
        top_samples=top_samples_table(document),
        pictures=picture_views(document, pictures),
        pictures_note=pictures_note,
        bound_chart=sample_chart(document["samples"], document["verdict"]["threshold"],
                                 bound_value(document["bound"]), sample_bounds),
        bound=bound,
        layers=layers,
        architecture=architecture_section(document),
        checks=check_views(document),
        limitations=list(document["limitations"]),
        attack=attack_view(document, attack_pictures, attack_pictures_note),
        labels=labels_section(document),
        certify=certify_view(document),
    )
