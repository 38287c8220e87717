"""``fimaudit jacobian``: the raw input Jacobians d logits / d input, written to a .npy file.

For users who want J itself (their own analysis, attacks, saliency). The logits are those the
audit differentiates (see graph/selection.py: the input of a final Softmax, the two-class
logits of a sigmoid, or log p). The file holds [N, K, *input dims] float32 and is written
sample chunk by sample chunk (the .npy header, then each chunk's bytes) into a temporary file in
the destination folder, then renamed into place through the output transaction of
report/writing.py: memory stays bounded by one chunk, a full disk is an ordinary write error (a
memory-mapped file would die of SIGBUS instead), and a failed or interrupted run leaves no file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fimaudit.audit import prepare_jacobians
from fimaudit.report.outputs import refuse_outputs_over
from fimaudit.report.writing import OutputSet
from fimaudit.resources import MemoryBudget, MemoryPlan, array_bytes, element_count
from fimaudit.runtime import DEFAULT_TIMEOUT_S

logger = logging.getLogger(__name__)

#: The .npy element type: little-endian float32 whatever the machine.
NPY_DTYPE = "<f4"


@dataclass
class JacobianExport:
    """What ``export_jacobian`` wrote."""

    path: str
    shape: tuple[int, ...]
    gradients: str
    note: str
    seconds: float
    model_evaluations: int


def _samples_per_chunk(plan: MemoryPlan, classes: int, input_size: int) -> int:
    """Samples differentiated per block.

    The planned batch of Jacobian rows, and no more dense [n, K, d] Jacobians (float64, plus
    their float32 copy) than the plan leaves room for.
    """
    spare = plan.budget.limit - sum(plan.needs.held.values()) - plan.batch_rows * plan.needs.per_row
    per_sample = max(1, array_bytes((classes, input_size), 8 + np.dtype(NPY_DTYPE).itemsize))
    return max(1, min(plan.batch_rows // max(1, classes), 1 + max(0, spare) // per_sample))


def export_jacobian(
    model_path: str,
    data_path: str,
    out_path: str,
    gradients: str = "auto",
    samples: int | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    max_memory: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    output_kind: str | None = None,
) -> JacobianExport:
    """Compute the Jacobians of the samples in ``data_path`` and write them to ``out_path``."""
    started = time.perf_counter()
    with OutputSet([out_path], [model_path, data_path]) as outputs:
        outputs.check()
        ready = prepare_jacobians(
            model_path, data_path, gradients, samples, MemoryBudget.from_option(max_memory), timeout,
            refuse_outputs_over(outputs), input_name, output_name, output_kind,
        )
        prepared, data, plan, choice = ready.prepared, ready.data, ready.plan, ready.choice
        jacobian = choice.source
        samples_in = data.inputs
        shape = (samples_in.shape[0], prepared.num_classes, *samples_in.shape[1:])
        per_chunk = _samples_per_chunk(plan, prepared.num_classes, element_count(samples_in.shape[1:]))
        stream = outputs.stage(out_path)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(NPY_DTYPE)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(stream, header)
        for start in range(0, samples_in.shape[0], per_chunk):
            block = jacobian.dense(samples_in[start : start + per_chunk])
            rows = np.ascontiguousarray(block, dtype=NPY_DTYPE).reshape(block.shape[0], *shape[1:])
            stream.write(rows.data.cast("B"))
        outputs.commit()  # the model's files were added as inputs when it was loaded
    target = Path(out_path)
    logger.info("wrote %s: %s (%s)", target, shape, choice.reason)
    return JacobianExport(
        path=str(target),
        shape=shape,
        gradients=choice.kind,
        note=choice.reason,
        seconds=time.perf_counter() - started,
        model_evaluations=jacobian.accounting.evaluations,
    )
