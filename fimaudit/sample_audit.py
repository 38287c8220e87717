"""One sample's audit: the estimator in each input space, checked, as a SampleResult.

This is the unit every executor runs (fimaudit/sample_loop.py: in this process, in local worker
processes, or on Dask workers). A sample's result depends only on the model, the settings, the
sample's values and logits, and its index (its random stream is ``RandomStreams(seed).sample(i)``,
re-created for each space): not on which process runs it, in what order, or after how many others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fimaudit.errors import ModelError
from fimaudit.fisher.covariance import softmax
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import Estimator, get_estimator
from fimaudit.fisher.result import SpectralResult
from fimaudit.gradients import FiniteDerivatives
from fimaudit.gradients.base import InputJacobian
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
