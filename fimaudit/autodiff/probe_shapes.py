"""Shapes that static shape inference could not find, measured by running the forward model.

Why: exporters (torchscript ViTs, for one) compute Reshape targets from Shape ops in ways onnx's
shape inference cannot follow, leaving intermediate tensors without a rank; gradient rules need
ranks (and sometimes dims). Running the model on placeholder inputs shows the real shapes.

Batch-derived dims must stay symbolic (a dim that is 1 at batch 1 would otherwise look like a
broadcast axis), so with a dynamic batch the model runs twice, at batch 1 and 2: a dim that is
the same in both runs is static; one equal to the batch in both is the input's batch symbol;
any other that changes gets a symbol of its own. With a fixed batch one run gives exact dims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from fimaudit.errors import ModelTimeoutError
from fimaudit.graph.tensors import Dim
from fimaudit.runtime import DEFAULT_TIMEOUT_S, create_session, run_session

logger = logging.getLogger(__name__)


@dataclass
class ShapeProbe:
    """How to feed the forward model placeholder inputs: one sample's shape and the other inputs."""

    sample_shape: tuple[int, ...]
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    fixed_batch: int | None = None
    extra_feeds: dict[str, np.ndarray] = field(default_factory=dict)
    providers: list[str] | None = None
    #: Seconds one run may take (see runtime.run_session); None: no limit.
    timeout: float | None = DEFAULT_TIMEOUT_S


def _run_with_outputs(
    model: onnx.ModelProto, probe: ShapeProbe, input_name: str, names: list[str], batch: int
) -> dict[str, tuple[int, ...]]:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    session, _ = create_session(exposed, probe.providers)
    feeds = {input_name: np.zeros((batch, *probe.sample_shape), dtype=probe.dtype)}
    for name, value in probe.extra_feeds.items():
        feeds[name] = np.repeat(value[None], batch, axis=0)
    values = run_session(session, names, feeds, probe.timeout)
    return {name: tuple(int(d) for d in np.shape(value)) for name, value in zip(names, values, strict=True)}


def measured_shapes(
    model: onnx.ModelProto, input_name: str, names: list[str], probe: ShapeProbe, batch_symbol: Dim = "N"
) -> dict[str, list[Dim]]:
    """Shapes of the tensors ``names`` from runs of ``model`` (empty dict if a run fails)."""
    if not names:
        return {}
    try:
        if probe.fixed_batch:
            first = _run_with_outputs(model, probe, input_name, names, probe.fixed_batch)
            return {name: list(shape) for name, shape in first.items()}
        one = _run_with_outputs(model, probe, input_name, names, 1)
        two = _run_with_outputs(model, probe, input_name, names, 2)
    except ModelTimeoutError:  # the model does not finish: no later run would either
        raise
    except Exception as exc:  # any failure only means fewer shapes: rules then say what they miss
        logger.info("could not measure intermediate shapes: %s", exc)
        return {}
    shapes: dict[str, list[Dim]] = {}
    for name in names:
        a, b = one[name], two[name]
        if len(a) != len(b):
            continue
        dims: list[Dim] = []
        for axis, (d1, d2) in enumerate(zip(a, b, strict=True)):
            if d1 == d2:
                dims.append(d1)
            elif (d1, d2) == (1, 2):
                dims.append(batch_symbol)
            else:
                dims.append(f"fimaudit_dim_{name}_{axis}")
        shapes[name] = dims
    return shapes
