"""One sample's audit: the estimator in each input space, checked, as a SampleResult.

This is the unit every executor runs (fimaudit/sample_loop.py: in this process, in local worker
processes, or on Dask workers). A sample's result depends only on the model, the settings, the
sample's values and logits, and its index (its random stream is ``RandomStreams(seed).sample(i)``,
re-created for each space): not on which process runs it, in what order, or after how many others.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from fimaudit.errors import ModelError
from fimaudit.fisher.covariance import softmax
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import Estimator, get_estimator
from fimaudit.fisher.result import SpectralResult
from fimaudit.gradients import FiniteDerivatives
from fimaudit.gradients.base import InputJacobian
from fimaudit.gradients.graph import GraphJacobian
from fimaudit.pixel_space import DenseMemo, PixelMap, PixelSpaceJacobian, rescaled
from fimaudit.randomness import RandomStreams
from fimaudit.results import SampleResult


@dataclass(frozen=True)
class SampleSettings:
    """What decides a sample's numbers besides the model: the estimator, its budget and seed, the spaces."""

    method: str
    budget: int | None
    seed: int
    #: The space whose lambda_max the verdict reads ("model" or "pixel").
    space: str = "model"
    #: x = a p + b of the preprocessing (None: no pixel space, e.g. array data).
    pixel_map: PixelMap | None = None
    #: Samples whose Jacobians are computed in one gradient run: fixed groups of consecutive
    #: indices (sample_groups.py); 1: one sample at a time.
    group: int = 1


class SampleAuditor:
    """Audits samples one at a time on one gradient source (built once per process)."""

    def __init__(
        self,
        source: InputJacobian,
        settings: SampleSettings,
        masked: object | None = None,
        estimate: Estimator | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.masked = masked  # --wrt embeddings: a source per sample (tokens.MaskedJacobian.at)
        self.estimate = estimate if estimate is not None else get_estimator(settings.method)
        self.streams = RandomStreams(settings.seed)

    def _source_for(self, index: int) -> InputJacobian:
        base = self.masked.at(index) if self.masked is not None else self.source  # type: ignore[attr-defined]
        return FiniteDerivatives(DenseMemo(base), index)

    def _run(self, problem: SampleProblem, index: int) -> SpectralResult:
        result = self.estimate(problem, self.settings.budget, self.streams.sample(index))
        if not np.isfinite(result.value):
            raise ModelError(
                f"lambda_max of sample {index} is {result.value}: the model's derivatives overflow "
                "or are undefined there"
            )
        return result

    def audit_rows(
        self,
        indices: Sequence[int],
        rows: np.ndarray,
        logits: np.ndarray,
        labels: Sequence[int | None],
        wanted: Collection[int],
    ) -> list[SampleResult]:
        """The results of the samples ``wanted`` among ``indices`` (ascending; their values ``rows``).

        With ``settings.group`` > 1, ``indices`` must hold whole groups (sample_groups.py): each
        group's Jacobians are computed in one run first, all its members', wanted or not (a
        resumed audit recomputes a finished member's Jacobian so that the run is the one every
        other path makes), and let go after the group. A result's ``seconds`` include its share
        of that run.
        """
        width = max(1, self.settings.group)
        prefetching = self.source if width > 1 and isinstance(self.source, GraphJacobian) else None
        results: list[SampleResult] = []
        positions = list(enumerate(indices))
        for _, members in itertools.groupby(positions, key=lambda item: item[1] // width):
            group = list(members)
            audited = [(i, index) for i, index in group if index in wanted]
            if not audited:
                continue
            share = 0.0
            if prefetching is not None:
                start = time.perf_counter()
                prefetching.prefetch(rows[[i for i, _ in group]])
                share = (time.perf_counter() - start) / len(group)
            try:
                for i, index in audited:
                    sample = self.audit(index, rows[i], logits[i], labels[i])
                    sample.result.seconds += share
                    results.append(sample)
            finally:
                if prefetching is not None:
                    prefetching.prefetch(rows[:0])
        return results

    def audit(self, index: int, sample: np.ndarray, logits: np.ndarray, true_class: int | None) -> SampleResult:
        """Sample ``index``: lambda_max in the model's space and, with a preprocessing map, in pixels."""
        source = self._source_for(index)
        model = self._run(SampleProblem(sample=sample, logits=logits, jacobian=source), index)
        spaces: dict[str, SpectralResult] = {"model": model}
        pixel_map = self.settings.pixel_map
        if pixel_map is not None:
            uniform = pixel_map.uniform
            if uniform is not None:
                spaces["pixel"] = rescaled(model, uniform)
            else:
                pixel_source = PixelSpaceJacobian(source, pixel_map, sample)
                problem = SampleProblem(sample=pixel_source.pixel_sample, logits=logits, jacobian=pixel_source)
                spaces["pixel"] = self._run(problem, index)
            if self.settings.space != "pixel":
                spaces["pixel"].eigenvector = None  # the report pictures the verdict's space only
            else:
                model.eigenvector = None
        probabilities = softmax(logits)
        return SampleResult(
            index=index,
            result=spaces[self.settings.space],
            top_prob=float(probabilities.max()),
            predicted_class=int(probabilities.argmax()),
            logits=logits,
            true_class=true_class,
            spaces=spaces,
            space=self.settings.space,
        )
