"""``fimaudit jacobian``: the raw input Jacobians d logits / d input, written to a .npy file.

For users who want J itself (their own analysis, attacks, saliency). The logits are those the
audit differentiates (see graph/selection.py: the input of a final Softmax, the two-class
logits of a sigmoid, or log p). The file holds [N, K, *input dims] float32 and is written
sample chunk by sample chunk into a memory-mapped temporary file in the destination folder,
then renamed into place: memory stays bounded by one chunk, and an interrupted run leaves no
half-written file behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fimaudit.audit import AuditConfig, intake, make_jacobian, prepare_model
from fimaudit.data import load_data
from fimaudit.resources import MemoryBudget

logger = logging.getLogger(__name__)


@dataclass
class JacobianExport:
    """What ``export_jacobian`` wrote."""

    path: str
    shape: tuple[int, ...]
    gradients: str
    note: str
    seconds: float
    model_evaluations: int


def export_jacobian(
    model_path: str,
    data_path: str,
    out_path: str,
    gradients: str = "auto",
    samples: int | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    max_memory: int | None = None,
) -> JacobianExport:
    """Compute the Jacobians of the samples in ``data_path`` and write them to ``out_path``."""
    started = time.perf_counter()
    config = AuditConfig(
        model_path=model_path, data_path=data_path, samples=samples, gradients=gradients,
        input_name=input_name, output_name=output_name,
    )
    taken = intake(model_path, input_name, output_name)
    data = load_data(data_path, taken.selection, samples, 0, budget=MemoryBudget.from_option(max_memory))
    prepared = prepare_model(taken, config, probe=data.inputs[:1], extra=data.extra_feeds)
    jacobian, used, note = make_jacobian(prepared, gradients)
    inputs = data.inputs
    shape = (inputs.shape[0], prepared.num_classes, *inputs.shape[1:])
    per_chunk = max(1, prepared.runner.max_batch // max(1, prepared.num_classes))
    target = Path(out_path)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp.npy", dir=target.parent or ".")
    os.close(handle)
    try:
        output = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
        for start in range(0, inputs.shape[0], per_chunk):
            block = jacobian.dense(inputs[start : start + per_chunk])
            output[start : start + block.shape[0]] = block.reshape(block.shape[0], *shape[1:])
        output.flush()
        del output
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    logger.info("wrote %s: %s (%s)", target, shape, note)
    return JacobianExport(
        path=str(target),
        shape=shape,
        gradients=used,
        note=note,
        seconds=time.perf_counter() - started,
        model_evaluations=jacobian.accounting.evaluations,
    )
