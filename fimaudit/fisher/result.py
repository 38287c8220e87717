"""What an estimator returns: a value that says what it is and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The kinds a reported number can be. A maximum of random Rayleigh quotients is a lower bound.
KINDS = ("exact", "estimate", "lower_bound", "upper_bound")


@dataclass
class SpectralResult:
    """lambda_max(F(x)) for one sample, with honest labelling.

    ``interval`` is a confidence interval for estimates (``confidence`` says which level) and
    None for exact values and one-sided bounds.
    """

    value: float
    kind: str
    interval: tuple[float, float] | None = None
    confidence: float | None = None
    trace: float | None = None
    eigenvector: Any = None  # top eigenvector of F in input space (numpy array) when known
    model_evaluations: int = 0
    matvecs: int = 0
    seconds: float = 0.0
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown result kind {self.kind!r}; expected one of {KINDS}")
