"""``fimaudit compare``: audit several models on the same data, for one side-by-side report.

Every model is audited with the same settings (data, samples, method, gradients, seed), so their
numbers differ only because the models differ. A model that cannot be audited (unsupported op,
input that does not fit the data) does not stop the others: its error is kept and reported.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

from fimaudit.audit import AuditConfig, AuditResult, run_audit
from fimaudit.errors import FimauditError, InputError

logger = logging.getLogger(__name__)


@dataclass
class ModelOutcome:
    """One model of a comparison: its audit, or the error that stopped it."""

    path: str
    result: AuditResult | None = None
    error: str | None = None


@dataclass
class Comparison:
    config: AuditConfig
    outcomes: list[ModelOutcome]
    started_at: str


def run_comparison(
    model_paths: Sequence[str],
    config: AuditConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Audit each of ``model_paths`` with ``config`` (its ``model_path`` is ignored).

    Raises the first model's error when no model at all could be audited: then there is nothing
    to compare and the cause is most likely the data or the options, not one model.
    """
    if len(model_paths) < 2:
        raise InputError("compare needs at least two models")
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    outcomes: list[ModelOutcome] = []
    errors: list[FimauditError] = []
    for number, path in enumerate(model_paths, start=1):
        try:
            result = run_audit(dataclasses.replace(config, model_path=str(path)))
            outcomes.append(ModelOutcome(str(path), result=result))
        except FimauditError as exc:
            logger.warning("%s could not be audited: %s", path, exc)
            errors.append(exc)
            outcomes.append(ModelOutcome(str(path), error=f"{type(exc).__name__}: {exc}"))
        if progress is not None:
            progress(number, len(model_paths))
    if len(errors) == len(outcomes):
        raise errors[0]
    return Comparison(config, outcomes, started_at)
