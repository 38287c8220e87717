"""Run the logits model once per sample and read the intermediate tensors the bounds need.

Why: local (per-sample) gains read the activations at the sample — a LayerNorm's row
variances, a softmax's probabilities, attention's q, k and v — and a few shapes are only known
after running (dynamic reshapes). Only the requested tensors are added as outputs, so the
run costs one forward pass and the memory of those tensors, not of every activation.
Samples are run one at a time (batch 1): intermediate tensors need not keep the batch on axis 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from fimaudit.errors import ModelError, ModelTimeoutError
from fimaudit.graph.view import GraphView
from fimaudit.runtime import DEFAULT_TIMEOUT_S, create_session, run_session

logger = logging.getLogger(__name__)


class IntermediateProbe:
    """An ONNX Runtime session over ``model`` that also returns ``tensors``."""

    def __init__(
        self,
        model: onnx.ModelProto,
        view: GraphView,
        tensors: Sequence[str],
        providers: Sequence[str] | None = None,
        extra_feeds: dict[str, np.ndarray] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.input_name = view.input_name
        self.timeout = timeout
        self.extra_feeds = extra_feeds or {}
        graph_inputs = {value.name for value in model.graph.input}
        existing = [value.name for value in model.graph.output]
        wanted = []
        for name in dict.fromkeys(tensors):
            if name in graph_inputs or name in view.constants or name in existing:
                continue
            if name not in view.elem_types:
                logger.info("no type known for %s; it is not probed", name)
                continue
            wanted.append(name)
        # One C++ copy (copy.copy serialises and parses the whole model, then the graph was copied
        # again: 2.6 s against 0.5 s for VGG-11's 491 MiB of weights).
        probed = onnx.ModelProto()
        probed.CopyFrom(model)
        for name in wanted:
            probed.graph.output.append(helper.make_tensor_value_info(name, view.elem_types[name], None))
        self.output_names = existing + wanted
        self.session, _ = create_session(probed, providers)

    def run(self, sample: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs for one sample (given without its batch axis)."""
        rows = np.asarray(sample)[None]
        feeds = {self.input_name: rows}
        for name, value in self.extra_feeds.items():
            feeds[name] = value[None]
        try:
            results = run_session(self.session, self.output_names, feeds, self.timeout)
        except ModelTimeoutError:
            raise
        except Exception as exc:  # ORT runtime failures
            raise ModelError(f"ONNX Runtime failed while probing activations: {str(exc).splitlines()[0]}") from exc
        return dict(zip(self.output_names, results, strict=True))
