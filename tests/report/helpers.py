"""Documents for report tests: synthetic ones (verdict, checks) and real audits of sample models."""

from __future__ import annotations

import copy
from typing import Any

from fimaudit.audit import AuditConfig, AuditResult, run_audit
from tests.conftest import SAMPLES

MLP = str(SAMPLES / "mlp.onnx")
DIGITS = str(SAMPLES / "digits_test.npy")


def sample(index: int, value: float, kind: str = "exact", interval: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    """One ``samples`` entry as build_document writes it."""
    entry = {
        "index": index, "lambda_max": value, "kind": kind, "interval": interval, "confidence": 0.95 if interval else None,
        "trace": value * 1.1, "top_prob": 0.9, "predicted_class": index % 3, "model_evaluations": 10,
        "matvecs": 0, "seconds": 0.0, "diagnostics": {},
    }
    entry.update(extra)
    return entry


def synthetic_document(samples: list[dict[str, Any]], threshold: float | None = None, statistic: str = "max",
                       gradients: str = "fd", **sections: Any) -> dict[str, Any]:
    """A minimal document with the foundation's fields, before checks and verdict are derived."""
    import numpy as np

    values = np.array([s["lambda_max"] for s in samples], dtype=np.float64)
    summary = {"count": len(samples), "max": float(values.max()), "mean": float(values.mean()),
               "median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
               "min": float(values.min()), "std": float(values.std())}
    document = {
        "schema_version": 1,
        "tool": {"name": "fimaudit", "version": "0.0.test"},
        "created_at": "2026-01-01T00:00:00+00:00",
        "environment": {"fimaudit": "0.0.test", "provider": "CPUExecutionProvider"},
        "model": {"path": "/models/m.onnx", "sha256": "ab" * 32, "producer": "tests", "opset": 17, "opsets": {"ai.onnx": 17},
                  "ir_version": 8, "parameter_count": 10, "doc_string": "", "metadata": {},
                  "input": {"name": "x", "shape": ["N", 4], "dtype": "float32"},
                  "output": {"name": "y", "kind": "logits", "logits": "as is", "num_classes": 3}},
        "architecture": {"family": "unknown"},
        "data": {"source": "data.npy", "synthetic": False, "count": len(samples), "sample_shape": [4],
                 "statistics": {"min": 0.0, "max": 1.0, "mean": 0.5, "std": 0.3}},
        "method": {"estimator": "exact", "gradients": gradients, "gradients_note": "", "gradient_settings": {},
                   "budget": None, "seed": 0, "provider": "CPUExecutionProvider", "model_evaluations": 1, "seconds": 0.1},
        "samples": samples,
        "summary": summary,
        "bound": None,
        "gradient_check": None,
        "verdict": {"threshold": threshold, "statistic": statistic, "value": summary[statistic],
                    "passed": threshold is None or summary[statistic] <= threshold, "reason": ""},
    }
    document.update(copy.deepcopy(sections))
    return document


def audit_mlp(samples: int = 6, **options: Any) -> AuditResult:
    """A real audit of the sample MLP on the digits (finite differences: fast and deterministic)."""
    return run_audit(AuditConfig(model_path=MLP, data_path=DIGITS, samples=samples, gradients="fd", **options))
