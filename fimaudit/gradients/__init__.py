"""Gradient sources: input Jacobians of the logits, and the one factory that chooses them.

- ``base.py``: the interface every source implements (``InputJacobian``: logits, jvp, vjp, dense,
  accounting), the typed choice ``SourceChoice`` and the NaN/Inf guard ``FiniteDerivatives``;
- ``graph.py``: gradient graphs derived from the ONNX graph (``fimaudit.autodiff`` builds them),
  run by ONNX Runtime;
- ``finite_differences.py``: central differences of the logits, for any model.

The black-box estimator (``fimaudit.fisher.blackbox``) needs no source beyond ``logits``.
``make_source(kind, ...)`` is the only place that decides which source an audit uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fimaudit.errors import InputError, NotDifferentiableError, UnsupportedOpError
from fimaudit.gradients.base import FiniteDerivatives, GradientKind, InputJacobian, SourceChoice, SourceName
from fimaudit.gradients.finite_differences import FiniteDifferenceJacobian
from fimaudit.gradients.graph import GraphJacobian, graph_source
from fimaudit.graph.selection import quantized_nodes_on_path
from fimaudit.runtime import ModelRunner

__all__ = [
    "FiniteDerivatives",
    "FiniteDifferenceJacobian",
    "GradientKind",
    "GraphJacobian",
    "InputJacobian",
    "SourceChoice",
    "SourceName",
    "gradient_kind",
    "make_source",
]

logger = logging.getLogger(__name__)


def gradient_kind(requested: GradientKind | str) -> GradientKind:
    """``--gradients`` as a GradientKind; an unknown name is an InputError listing the choices."""
    try:
        return GradientKind(requested)
    except ValueError:
        choices = ", ".join(kind.value for kind in GradientKind)
        raise InputError(f"unknown gradient source {requested!r}; choose from {choices}") from None


def make_source(
    kind: GradientKind | str,
    runner: ModelRunner,
    sample_shape: Sequence[int],
    num_classes: int,
    chunk_rows: int | None = None,
) -> SourceChoice:
    """The gradient source for ``--gradients`` on the logits model ``runner`` runs.

    ``graph`` builds gradient graphs or raises (UnsupportedOpError naming the ops without a rule,
    NotDifferentiableError for a quantized model); ``fd`` is central finite differences; ``auto``
    takes gradient graphs when they can be built and run, else finite differences, and says why in
    the choice's reason (and a warning). ``chunk_rows`` bounds the rows of perturbed inputs built
    at once (the memory plan's batch).
    """
    wanted = gradient_kind(kind)
    shape = tuple(int(d) for d in sample_shape)
    quantized = quantized_nodes_on_path(runner.model, runner.input_name)
    if quantized:
        named = ", ".join(f"{node.op_type} {node.name or node.output[0]!r}" for node in quantized[:3])
        why = f"the model is quantized ({named}): its integer arithmetic has no gradient"
        if wanted is GradientKind.GRAPH:
            raise NotDifferentiableError(
                f"{why}; use --gradients fd (finite differences)", [n.op_type for n in quantized]
            )
        logger.warning("%s; finite differences measure the steps of its quantizer", why)
        return SourceChoice(
            FiniteDifferenceJacobian(runner, shape, num_classes, chunk_rows=chunk_rows),
            "fd",
            f"finite differences ({why})",
        )
    if wanted is GradientKind.FD:
        return SourceChoice(
            FiniteDifferenceJacobian(runner, shape, num_classes, chunk_rows=chunk_rows),
            "fd",
            "finite differences requested",
        )
    if wanted is GradientKind.GRAPH:
        return SourceChoice(
            graph_source(runner, shape, num_classes), "graph", "gradient graphs derived from the ONNX graph"
        )
    try:
        graph = graph_source(runner, shape, num_classes)
    except UnsupportedOpError as reason:
        logger.warning("gradient graphs unavailable (%s); using finite differences", reason)
        fd = FiniteDifferenceJacobian(runner, shape, num_classes, chunk_rows=chunk_rows)
        return SourceChoice(fd, "fd", f"finite differences (fallback: {reason})")
    return SourceChoice(graph, "graph", "gradient graphs derived from the ONNX graph")
