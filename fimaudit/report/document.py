"""The JSON document of an audit: the report's data model, schema-versioned.

Field names are a contract with users' pipelines: add fields freely, never rename or remove
one without raising ``SCHEMA_VERSION``. The README's "The JSON document" section documents them.

Sections other stages fill (``architecture``, ``bound``, ``gradient_check``, per-sample ``bound``)
are always present, as null when not computed, so a reader can tell "not computed" from "absent
by mistake". Nothing is decided here: ``checks`` and the three-way ``verdict`` are the audit's own
(fimaudit/verdict.py), serialised by their ``to_dict``; this is the one place results become JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fimaudit.fisher.dataset_view import dataset_view
from fimaudit.report.limitations import limitations
from fimaudit.results import AuditResult

SCHEMA_VERSION = 1


def plain(value: Any) -> Any:
    """Results other stages attach, as JSON objects: their ``to_dict()``, else dataclass fields."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def data_statistics(inputs: np.ndarray) -> dict[str, float]:
    """Range of the audited inputs: shows whether they look normalised the way the model expects."""
    from fimaudit.data.streaming import is_streamed, value_statistics

    if is_streamed(inputs):  # mapped or spilled samples: batch by batch, never all in float64
        return value_statistics(inputs)
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
            # Image data (issue 13): the preprocessing spec that made the inputs, and the files.
            "preprocess": None if result.data.preprocess is None else result.data.preprocess.to_dict(),
            "labelled": result.data.labels is not None,
        },
        # With true labels (image folders, CSV lists, --labels): accuracy, lambda_max by true class,
        # correct vs misclassified (fimaudit/labelled.py); the verdict's space in "space".
        "labels": None if result.labels is None else result.labels.to_dict(),
        "space": result.config.space,
        "method": {
            "estimator": config.method,
            "gradients": result.gradients,
            "gradients_note": result.gradients_note,
            "gradient_settings": dict(result.gradient_settings),
            "budget": config.budget,
            "seed": config.seed,
            "provider": result.environment["provider"],
            "model_evaluations": result.model_evaluations,
            "seconds": result.seconds,
        },
        "samples": [sample.to_dict() for sample in result.samples],
        "summary": result.summary.to_dict(),
        "dataset": dataset_view(result.samples),
        "bound": None if result.bound is None else result.bound.to_dict(),
        "gradient_check": None if result.gradient_check is None else result.gradient_check.to_dict(),
        "verdict": result.verdict.to_dict(),
        "checks": [check.to_dict() for check in result.checks],
        # --attack (fimaudit/attacks/stage.py): per-sample results are in samples[].attack.
        "attack_summary": None if result.attack is None else result.attack.to_dict(),
        # --certify (fimaudit/certify/stage.py): per-sample certificates are in samples[].certificates.
        "certification": None if result.certification is None else result.certification.to_dict(),
    }
    # --wrt embeddings: per-token sensitivity and the tokens in each sample (fimaudit/tokens.py).
    from fimaudit.tokens import token_document

    token_document(getattr(result.data, "tokens", None), document)
    # The limitations are text about the document as a whole (report/limitations.py).
    document["limitations"] = limitations(document)
    return document
