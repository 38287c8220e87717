"""Relax a fixed batch dimension (common in dynamo exports: batch 1) when the graph allows it.

A model exported with batch 1 forces one session call per input row, which makes finite
differences (2 d rows per sample) slow. Many such graphs compute the same thing for any batch
size once the input's first dimension is made symbolic; we try that, and keep it only if a
batch of two rows gives the same logits as two single-row runs.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnx

from fimaudit.errors import ModelError
from fimaudit.runtime import ModelRunner

logger = logging.getLogger(__name__)


def with_symbolic_batch(model: onnx.ModelProto, input_name: str) -> onnx.ModelProto:
    """A copy whose input and outputs have a symbolic first dimension and no stale shape hints."""
    relaxed = copy.deepcopy(model)
    graph = relaxed.graph
    chosen = [value for value in graph.input if value.name == input_name]
    for value in chosen + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "fimaudit_batch"
    del graph.value_info[:]
    return relaxed


def try_relax_batch(runner: ModelRunner, probe: np.ndarray) -> ModelRunner:
    """Return a runner that accepts any batch size if that is safe, else ``runner`` unchanged.

    ``probe`` is one sample [1, ...] used to check that batching changes nothing.
    """
    if runner.fixed_batch is None:
        return runner
    try:
        candidate = ModelRunner(
            model=with_symbolic_batch(runner.model, runner.input_name),
            input_name=runner.input_name,
            output_names=runner.output_names,
            fixed_batch=None,
            max_batch=runner.max_batch,
            providers=runner.providers,
            threads=runner.threads,
            extra_feeds=runner.extra_feeds,
            accounting=runner.accounting,
            timeout=runner.timeout,
        )
        other = probe + np.asarray(0.5, dtype=probe.dtype)
        (single_a,) = runner.run(probe)
        (single_b,) = runner.run(other)
        (pair,) = candidate.run(np.concatenate([probe, other]))
    except ModelError as exc:
        logger.info("keeping the fixed batch size %d: %s", runner.fixed_batch, exc)
        return runner
    expected = np.concatenate([single_a, single_b])
    if pair.shape == expected.shape and np.allclose(pair, expected, rtol=1e-5, atol=1e-6):
        logger.info("input %r: fixed batch %d relaxed to a dynamic batch", runner.input_name, runner.fixed_batch)
        return candidate
    logger.info("keeping the fixed batch size %d: batched outputs differ", runner.fixed_batch)
    return runner
