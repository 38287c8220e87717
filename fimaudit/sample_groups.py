"""Samples differentiated together: fixed groups of consecutive indices, the same on every path.

Why: the exact estimator needs each sample's dense K x d Jacobian, and one gradient run over
B samples x K one-hot cotangents (``GraphJacobian.prefetch``) keeps the convolutions' matrix
products B times wider than B runs of one sample (ResNet-18, VGG-11-BN and MobileNet-V3 at
3x32x32, K = 10: about 30% less time a sample at B = 8; benchmarks/sample_groups.py).

The catch: an audit must give the same numbers serially, with ``--workers``, on a Dask
``--scheduler`` and resumed from a ``--checkpoint``, and float32 rounding in ONNX Runtime may in
principle depend on which rows share a run (on this machine's CPU kernels it did not: grouped
and single Jacobians of ResNet-18, VGG-11-BN and MobileNet-V3 were bit-identical, but other
kernels or providers promise nothing). So groups are fixed by index alone: group g is the
samples [g B, (g + 1) B) of the audit (the last one shorter), whoever computes it. Every executor
receives whole groups, and a resumed audit recomputes the whole group of a missing sample
(finished members ride along and are not audited again). The width B is part of the
checkpoint's identity.

Only the graph source on the dense route groups samples (``exact``, or ``auto`` when it chooses
exact); every other estimator asks for products of one sample, which grouping cannot widen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fimaudit.fisher import lanczos as lanczos_module
from fimaudit.fisher.auto import choose_method
from fimaudit.fisher.operator import resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.gradients.base import InputJacobian
from fimaudit.gradients.graph import GraphJacobian

#: Most samples per group: the gain flattens beyond, while the held Jacobians grow with B.
#: ResNet-18 at 3x32x32, K = 10, 16 samples, interleaved, median of 3 at load ~5 on 2 cores: 61 ms
#: a sample one at a time, 47 at B = 4, 34 at 8, 37 at 12, 38 at 16.
MAX_GROUP = 8


@dataclass(frozen=True)
class SampleGroups:
    """The audit's ``total`` samples cut into groups of ``width`` consecutive indices."""

    width: int
    total: int

    def members(self, index: int) -> range:
        """The indices of the group that holds sample ``index``."""
        first = index - index % self.width
        return range(first, min(self.total, first + self.width))

    def split(self, wanted: Sequence[int]) -> list[tuple[range, list[int]]]:
        """(the group's members, the wanted ones among them) for each group holding a wanted index.

        ``wanted`` ascending; the groups come in the same order.
        """
        found: list[tuple[range, list[int]]] = []
        for index in wanted:
            if found and index in found[-1][0]:
                found[-1][1].append(index)
            else:
                found.append((self.members(index), [index]))
        return found

    def chunks(self, wanted: Sequence[int], size: int) -> list[list[int]]:
        """``wanted`` (ascending) cut into chunks of whole groups, about ``size`` wanted samples each.

        A chunk takes groups until it holds at least ``size`` samples, so with ``width`` 1 the
        chunks are ``size`` samples exactly, as before grouping.
        """
        result: list[list[int]] = []
        current: list[int] = []
        for _, indices in self.split(wanted):
            current.extend(indices)
            if len(current) >= size:
                result.append(current)
                current = []
        if current:
            result.append(current)
        return result


def uses_dense_jacobians(source: InputJacobian, method: str, budget: int | None) -> bool:
    """Whether every sample's estimator asks ``source`` for its dense Jacobian (and nothing wider).

    ``exact`` always does; ``auto`` when it chooses exact, which depends on K, the source and
    the budget only (fisher/auto.py), never on the sample: asked here once with a zero sample.
    """
    if method == "exact":
        return True
    if method != "auto":
        return False
    matvecs = resolve_budget(
        "auto", budget, lanczos_module.DEFAULT_MATVECS, lanczos_module.MINIMUM_MATVECS, "operator products"
    )
    problem = SampleProblem(
        sample=np.zeros(source.input_size, dtype=np.float32),
        logits=np.zeros(source.num_classes),
        jacobian=source,
    )
    return choose_method(problem, matvecs, budget)[0] == "exact"


def group_width(source: InputJacobian, method: str, budget: int | None) -> int:
    """B for this audit: 1 unless ``source`` is a graph source on the dense route.

    Bounded by the memory plan's rows (``source.chunk_rows``, from ``--max-memory`` or the free
    memory): a group's run of B x K gradient rows takes at most half of them, so the run and
    the group's held float64 Jacobians (B x K x d x 8 bytes: 8 d bytes for each of half the
    rows, less than the three input copies the plan counts for every row) stay within the plan.
    A model with a fixed batch F runs F rows
    anyway: B = F (at most MAX_GROUP).
    """
    if not isinstance(source, GraphJacobian) or not uses_dense_jacobians(source, method, budget):
        return 1
    if source.batch is not None:
        return max(1, min(MAX_GROUP, source.batch))
    return max(1, min(MAX_GROUP, source.max_rows // (2 * source.num_classes)))
