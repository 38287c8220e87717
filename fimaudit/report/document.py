"""The JSON document of an audit: the report's data model, schema-versioned.

Field names are a contract with users' pipelines: add fields freely, never rename or remove
one without raising ``SCHEMA_VERSION``.
"""

from __future__ import annotations

from typing import Any

from fimaudit.audit import AuditResult

SCHEMA_VERSION = 1


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


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
    }


def build_document(result: AuditResult) -> dict[str, Any]:
    """The whole audit as plain JSON-ready data."""
    prepared = result.prepared
    description = prepared.description
    selection = prepared.selection
    config = result.config
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "fimaudit", "version": result.environment["fimaudit"]},
        "created_at": result.started_at,
        "environment": result.environment,
        "model": {
            "path": description.path,
            "sha256": description.sha256,
            "producer": " ".join(p for p in (description.producer, description.producer_version) if p),
            "opset": description.opsets.get("ai.onnx", 0),
            "opsets": description.opsets,
            "ir_version": description.ir_version,
            "parameter_count": description.parameter_count,
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
        "architecture": result.architecture,
        "data": {"source": result.data.source, "synthetic": result.data.synthetic, "count": len(result.samples)},
        "method": {
            "estimator": config.method,
            "gradients": result.gradients,
            "gradients_note": result.gradients_note,
            "budget": config.budget,
            "seed": config.seed,
            "provider": result.environment["provider"],
            "model_evaluations": result.model_evaluations,
            "seconds": result.seconds,
        },
        "samples": [sample_entry(audit) for audit in result.samples],
        "summary": result.summary,
        "bound": result.bound,
        "verdict": {
            "threshold": result.verdict.threshold,
            "statistic": result.verdict.statistic,
            "value": result.verdict.value,
            "passed": result.verdict.passed,
            "reason": result.verdict.reason,
        },
    }
