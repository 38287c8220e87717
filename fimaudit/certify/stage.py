"""The certificate stage of an audit: one call after the per-sample estimators (``--certify``).

For every audited sample: B(x, eps) for each requested eps, and with a threshold the certified
radius. The model is certified as a whole or not at all: an op without a rule raises
``NotCertified`` ("not certified: op X at node Y"), which the CLI reports as a usage error.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fimaudit.certify.certifier import NORMS, Certifier
from fimaudit.certify.radius import DEFAULT_TOLERANCE, certified_radius
from fimaudit.errors import InputError
from fimaudit.results import Certificate, Certification, SampleResult

logger = logging.getLogger(__name__)

STATEMENT = (
    "For every audited input x and every listed eps: lambda_max(F(x')) <= B(x, eps) for every x' with "
    "||x' - x||_{norm} <= eps{range}, for the model as real arithmetic on its stored weights (interval "
    "propagation with outward rounding in float64), in the model's input space."
)
NOT_CERTIFIED = (
    "Not certified: inputs farther than eps from every audited input; the float32 rounding of an ONNX Runtime "
    "run (a different function, within ~1e-6 relative); the preprocessing before the model's input (pixel "
    "space); the measured lambda_max itself, which is an estimate or exact value at x only."
)


@dataclass(frozen=True)
class CertifyConfig:
    """``--certify EPS,...``, ``--norm``, ``--input-range`` and the threshold whose radius is wanted."""

    epsilons: tuple[float, ...]
    norm: str = "2"
    input_range: tuple[float, float] | None = None
    threshold: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    #: bytes forward mode may hold (the audit's memory budget); None: symbols.py's own limit
    memory: int | None = None

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise InputError(f"--norm must be one of {sorted(NORMS)}, got {self.norm!r}")
        if not self.epsilons or any(not (math.isfinite(e) and e >= 0.0) for e in self.epsilons):
            raise InputError(f"--certify needs finite radii >= 0, got {list(self.epsilons)}")
        if self.input_range is not None and not self.input_range[0] <= self.input_range[1]:
            raise InputError(f"--input-range LO,HI needs LO <= HI, got {list(self.input_range)}")


def certification(config: CertifyConfig) -> Certification:
    """The statement of what the certificates hold over (for the JSON and the report)."""
    where = "" if config.input_range is None else f" and {config.input_range[0]:g} <= x' <= {config.input_range[1]:g}"
    statement = STATEMENT.replace("{norm}", config.norm).replace("{range}", where)
    return Certification(tuple(config.epsilons), config.norm, config.input_range, config.threshold,
                         config.tolerance, statement, NOT_CERTIFIED)


def certify_samples(config: CertifyConfig, logits_model, input_name: str, logits: str, inputs: np.ndarray,
                    audits: list[SampleResult], progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[list[SampleResult], Certification]:
    """Every sample's certificates (and radius with a threshold), and the certification statement.

    ``progress(done, total)`` after each sample: a 3x32x32 certificate takes minutes.
    """
    certifier = Certifier(logits_model, input_name, logits, tuple(int(d) for d in inputs.shape[1:]),
                          config.input_range, config.memory)
    certified = []
    for audit in audits:
        sample = np.asarray(inputs[audit.index], dtype=np.float64)
        if config.input_range is not None:
            low, high = config.input_range
            if sample.min() < low or sample.max() > high:
                raise InputError(f"sample {audit.index} lies outside --input-range {low:g},{high:g}")
        certificates = []
        for eps in config.epsilons:
            local = certifier.bound(sample, eps, config.norm)
            certificates.append(Certificate(eps, config.norm, local.value, local.unstable, local.seconds,
                                            local.composition.at_point))
        radius = None
        if config.threshold is not None:
            radius = certified_radius(certifier, sample, config.threshold, config.norm, config.tolerance).epsilon
        certified.append(dataclasses.replace(audit, certificates=tuple(certificates), certified_radius=radius))
        if progress is not None:
            progress(len(certified), len(audits))
        logger.info("sample %d: %s", audit.index,
                    ", ".join(f"B(eps={c.epsilon:g}) = {c.value:.4g}" for c in certificates))
    return certified, certification(config)
