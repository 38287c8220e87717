"""``fimaudit compare``: audit several models on the same data, for one side-by-side report.

Every model is audited with the same settings (data, samples, method, gradients, seed), so their
numbers differ only because the models differ. Two adjustments are made per model, and stated:

- **Layout.** A model whose input is the data's layout with the channel axis moved (NHWC where
  the data is NCHW, or the reverse) is audited on the data permuted to its layout (a temporary
  ``.npy`` in the model's layout; the result keeps the original data's name), so that sample i is
  the same picture for every model (fimaudit/compare.py, ``layout_for``).
- **Gradients.** A quantised model (QuantizeLinear, QLinearConv, MatMulInteger ...) is piecewise
  constant between its quantisation steps, so its graph gradients are zero almost everywhere:
  with ``--gradients auto`` it is audited with finite differences, and the outcome says so.

A model that cannot be audited (unsupported op, input that does not fit the data) does not stop
the others: its error is kept and reported.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fimaudit import audit as audit_module
from fimaudit.audit import AuditConfig, AuditResult, intake
from fimaudit.compare import Layout, layout_for, quantised_ops
from fimaudit.data import AuditData, load_data
from fimaudit.errors import FimauditError, InputError
from fimaudit.graph.selection import Selection
from fimaudit.resources import MemoryBudget

logger = logging.getLogger(__name__)


@dataclass
class ModelOutcome:
    """One model of a comparison: its audit, or the error that stopped it."""

    path: str
    result: AuditResult | None = None
    error: str | None = None
    #: The data was permuted to this model's layout (None: audited on the data as it is).
    layout: Layout | None = None
    #: What the comparison changed for this model, in words (layout, gradients); "" when nothing.
    note: str = ""


@dataclass
class Comparison:
    """Every model's audit outcome from one ``compare`` run, and when the run started."""
    config: AuditConfig
    outcomes: list[ModelOutcome]
    started_at: str


@dataclass
class _Plan:
    """How one model will be audited: the config to use, the layout applied, the note."""

    config: AuditConfig
    layout: Layout | None = None
    note: str = ""
    error: FimauditError | None = None


def _shared_data(config: AuditConfig, selections: Sequence[Selection | None]) -> AuditData | None:
    """The data as the first model that accepts it reads it (None when none does)."""
    memory = MemoryBudget.from_option(config.max_memory)
    for selection in selections:
        if selection is None:
            continue
        try:
            return load_data(config.data_path, selection, config.samples, config.seed, budget=memory)
        except InputError:
            continue
    return None


def _plan(paths: Sequence[str], config: AuditConfig, folder: Path) -> list[_Plan]:
    """Per model: the data layout it needs and the gradients it gets (see the module docstring)."""
    plans: list[_Plan] = []
    selections: list[Selection | None] = []
    quantised: list[list[str]] = []
    for path in paths:
        try:
            taken = intake(
                str(path), config.input_name, config.output_name, wrt=config.wrt, output_kind=config.output_kind
            )
            selections.append(taken.selection)
            quantised.append(quantised_ops(taken.loaded.proto))
        except FimauditError as exc:  # the audit raises it again, and it is reported there
            logger.debug("%s: %s", path, exc)
            selections.append(None)
            quantised.append([])
    data = _shared_data(config, selections) if config.wrt == "input" else None
    for position, (path, selection, quantised_here) in enumerate(zip(paths, selections, quantised, strict=True)):
        model_config = dataclasses.replace(config, model_path=str(path))
        notes = []
        layout = None
        if data is not None and selection is not None and not data.extra_feeds:
            layout = layout_for(data.inputs.shape[1:], selection.sample_shape)
        if layout is not None:
            assert data is not None
            permuted = np.ascontiguousarray(np.transpose(data.inputs, (0, *(1 + a for a in layout.permutation))))
            target = folder / f"model{position}_{layout.name.split()[-1].lower()}.npy"
            np.save(target, permuted, allow_pickle=False)
            model_config = dataclasses.replace(model_config, data_path=str(target), samples=None)
            notes.append(f"data permuted {layout.name} for this model's input")
        if quantised_here and config.gradients == "auto":
            model_config = dataclasses.replace(model_config, gradients="fd")
            notes.append(f"quantised ({', '.join(quantised_here)}): finite differences instead of graph gradients, "
                         "which are zero almost everywhere between quantisation steps")
        plans.append(_Plan(model_config, layout, "; ".join(notes)))
    return plans


def _restore_data(result: AuditResult, config: AuditConfig, layout: Layout) -> AuditResult:
    """``result`` as audited on the original data (its name and path), with the permutation stated."""
    synthetic = config.data_path is None
    source = f"synthetic N(0,1), seed {config.seed}" if config.data_path is None else Path(config.data_path).name
    data = dataclasses.replace(result.data, source=f"{source}, permuted {layout.name}", synthetic=synthetic)
    audited = dataclasses.replace(result.config, data_path=config.data_path, samples=config.samples)
    return dataclasses.replace(result, data=data, config=audited)


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
    with tempfile.TemporaryDirectory(prefix="fimaudit-compare-") as folder:
        plans = _plan(model_paths, config, Path(folder))
        for number, (path, plan) in enumerate(zip(model_paths, plans, strict=True), start=1):
            try:
                result = audit_module.run_audit(plan.config)  # looked up per call: one audit path, patchable
                if plan.layout is not None:
                    result = _restore_data(result, config, plan.layout)
                outcomes.append(ModelOutcome(str(path), result=result, layout=plan.layout, note=plan.note))
            except FimauditError as exc:
                logger.warning("%s could not be audited: %s", path, exc)
                errors.append(exc)
                outcomes.append(
                    ModelOutcome(str(path), error=f"{type(exc).__name__}: {exc}", layout=plan.layout, note=plan.note)
                )
            if progress is not None:
                progress(number, len(model_paths))
    if len(errors) == len(outcomes):
        raise errors[0]
    return Comparison(config, outcomes, started_at)
