"""The norms attacks measure in; ``AttackResult`` itself lives with the other results (fimaudit/results.py).

An ``AttackResult`` is only what a plain forward run of the model confirmed (CONVENTIONS.md,
"Guarantees"): ``verified`` is True when the adversarial example, cast to the model's input type
and clipped, was re-run by the same runner and its predicted class differs from the sample's.
``epsilon_min`` is then the norm of that applied perturbation: an upper bound on the distance from
the sample to the nearest input of another class (a stronger attack can only lower it).
"""

from __future__ import annotations

import numpy as np

from fimaudit.results import AttackResult, Norm

__all__ = ["AttackResult", "Norm", "norm_name", "perturbation_norm"]


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
