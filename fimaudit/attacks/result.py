"""The typed result of a minimum-norm attack on one sample, and the norms attacks measure in.

An ``AttackResult`` is only what a plain forward run of the model confirmed (CONVENTIONS.md,
"Guarantees"): ``verified`` is True when the adversarial example, cast to the model's input type
and clipped, was re-run by the same runner and its predicted class differs from the sample's.
``epsilon_min`` is then the norm of that applied perturbation: an upper bound on the distance from
the sample to the nearest input of another class (a stronger attack can only lower it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: The norms the attacks measure perturbations in.
Norm = Literal["2", "inf"]


def norm_name(norm: str) -> Norm:
    """``--norm`` as a Norm ("2", "l2", "inf", "linf"); anything else is a ValueError."""
    names: dict[str, Norm] = {"2": "2", "l2": "2", "inf": "inf", "linf": "inf"}
    try:
        return names[str(norm).lower()]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; choose 2 or inf") from None


def perturbation_norm(delta: np.ndarray, norm: Norm) -> np.ndarray:
    """Norms of the rows of ``delta`` [N, ...] in float64 (one value per row)."""
    flat = np.asarray(delta, dtype=np.float64).reshape(delta.shape[0], -1)
    if norm == "2":
        return np.linalg.norm(flat, axis=1)
    return np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(flat.shape[0])


@dataclass(frozen=True)
class AttackResult:
    """A minimum-norm attack on one sample, as a forward run confirmed it.

    ``norm``: the norm of ``epsilon_min``. ``epsilon_min``: the norm of the perturbation actually
    applied (after the cast to the model's input type and clipping); None when no adversarial
    example was found. ``verified``: a plain forward run predicted ``adversarial_class`` there,
    not ``original_class``. ``method``: the attacks that ran, e.g. ``deepfool+bisection``.
    ``evaluations``: model evaluations (input rows) the attack paid, gradients included.
    """

    norm: Norm
    epsilon_min: float | None
    verified: bool
    method: str
    evaluations: int
    adversarial_class: int | None
    original_class: int
    #: The verified adversarial example (the model's input type), None when none was found.
    example: np.ndarray | None = None
    #: Why no verified example is reported (budget spent, the range stopped it), else None.
    reason: str | None = None

    def __post_init__(self) -> None:
        """A reported epsilon always belongs to a verified example of another class."""
        if self.verified != (self.epsilon_min is not None):
            raise ValueError("epsilon_min is reported exactly when the example is verified")
        if self.verified and self.adversarial_class == self.original_class:
            raise ValueError("a verified adversarial example predicts another class")

    @property
    def kind(self) -> str:
        """What ``epsilon_min`` is: an upper bound on the true minimum adversarial distance."""
        return "upper_bound"

    def to_dict(self) -> dict[str, Any]:
        """The JSON record ``samples[].attack``: the contract fields of issue 11, then context."""
        return {
            "norm": self.norm,
            "epsilon_min": self.epsilon_min,
            "verified": self.verified,
            "method": self.method,
            "evaluations": self.evaluations,
            "adversarial_class": self.adversarial_class,
            "original_class": self.original_class,
            "kind": self.kind,
            "reason": self.reason,
        }
