"""The JSON document of an audit: the report's data model, schema-versioned.

Field names are a contract with users' pipelines: add fields freely, never rename or remove
one without raising ``SCHEMA_VERSION``. The README's "The JSON document" section documents them.

Sections other stages fill (``architecture``, ``bound``, ``gradient_check``, per-sample ``bound``)
are always present, as null when not computed, so a reader can tell "not computed" from "absent
by mistake". ``checks`` and the three-way ``verdict`` are derived last, from the document itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fimaudit.audit import AuditResult
from fimaudit.fisher.dataset_view import dataset_view
from fimaudit.report.checks import sanity_checks
from fimaudit.report.limitations import limitations
from fimaudit.report.verdict import assess

SCHEMA_VERSION = 1


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def plain(value: Any) -> Any:
    """Results other stages attach, as JSON objects: their ``to_dict()``, else dataclass fields."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def sample_entry(audit: Any) -> dict[str, Any]:
    """One entry of ``samples``."""
    result = audit.result
    return {
        "index": audit.index,
        "lambda_max": float(result.value),
        "kind": result.kind,
        "interval": list(result.interval) if result.interval is not None else None,
        "confidence": result.confidence,
        "trace": _finite_or_none(result.trace),
        "top_prob": audit.top_prob,
        "predicted_class": audit.predicted_class,
        "model_evaluations": result.model_evaluations,
        "matvecs": result.matvecs,
        "seconds": result.seconds,
        "diagnostics": result.diagnostics,
        "bound": getattr(audit, "bound", None),
    }


def data_statistics(inputs: np.ndarray) -> dict[str, float]:
    """Range of the audited inputs: shows whether they look normalised the way the model expects."""
    values = np.asarray(inputs, dtype=np.float64)
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


def build_document(result: AuditResult) -> dict[str, Any]:
    """The whole audit as plain JSON-ready data."""
    prepared = result.prepared
    description = prepared.description
    selection = prepared.selection
    config = result.config
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "fimaudit", "version": result.environment["fimaudit"]},
        "created_at": result.started_at,
        "environment": result.environment,
        "model": {
            "path": description.path,
            "sha256": description.sha256,
            "file_size": description.file_size,
            # The weights' identity: each external-data file and one digest over all the model's files.
            "external_data": list(description.external_data),
            "combined_sha256": description.combined_sha256,
            "producer": " ".join(p for p in (description.producer, description.producer_version) if p),
            "opset": description.opsets.get("ai.onnx", 0),
            "opsets": description.opsets,
            "ir_version": description.ir_version,
            "parameter_count": description.parameter_count,
            "subnormal_weights": result.subnormal_weights,
            "doc_string": description.doc_string,
            "metadata": description.metadata,
            "input": {
                "name": selection.input_name,
                "shape": selection.input_shape,
                "dtype": selection.input_dtype,
            },
            "output": {
                "name": selection.output_name,
                "kind": selection.output_kind,
                "logits": selection.logits_transform,
                "num_classes": prepared.num_classes,
            },
        },
        "architecture": plain(result.architecture),
        "data": {
            "source": result.data.source,
            "synthetic": result.data.synthetic,
            "count": len(result.samples),
            "sample_shape": list(result.data.inputs.shape[1:]),
            "statistics": data_statistics(result.data.inputs),
        },
        "method": {
            "estimator": config.method,
            "gradients": result.gradients,
            "gradients_note": result.gradients_note,
            "gradient_settings": dict(getattr(result, "gradient_settings", None) or {}),
            "budget": config.budget,
            "seed": config.seed,
            "provider": result.environment["provider"],
            "model_evaluations": result.model_evaluations,
            "seconds": result.seconds,
        },
        "samples": [sample_entry(audit) for audit in result.samples],
        "summary": result.summary,
        "dataset": dataset_view(result.samples),
        "bound": plain(result.bound),
        "gradient_check": plain(getattr(result, "gradient_check", None)),
        "verdict": {
            "threshold": result.verdict.threshold,
            "statistic": result.verdict.statistic,
            "value": result.verdict.value,
            "passed": result.verdict.passed,
            "reason": result.verdict.reason,
        },
    }
    # --wrt embeddings: per-token sensitivity and the tokens in each sample (fimaudit/tokens.py).
    from fimaudit.tokens import token_document

    token_document(getattr(result.data, "tokens", None), document)
    return finalise(document)


def finalise(document: dict[str, Any]) -> dict[str, Any]:
    """Derive ``checks``, the three-way ``verdict`` and ``limitations`` from a built document.

    Runs last so that every section (including those other stages add) is seen by the checks.
    """
    checks = sanity_checks(document)
    document["checks"] = checks
    document["verdict"] = assess(document, checks)
    document["limitations"] = limitations(document)
    return document
