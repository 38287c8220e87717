"""Estimators by name: ``@estimator("exact")`` registers the function it decorates.

An estimator is ``f(problem, budget, rng) -> SpectralResult``: ``budget`` is the user's
``--budget``, its explicit cost limit, which each estimator reads as what it counts (operator
products for lanczos, power and hutchinson, model evaluations for blackbox, as its docstring
says; None for its default) and passes on under that name (``num_matvecs``, ``num_evaluations``).
``rng`` is a
``numpy.random.Generator`` the caller owns: the audit gives each sample its own stream
(randomness.py); no estimator seeds one itself or reads global state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from fimaudit.errors import InputError
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.result import SpectralResult


class Estimator(Protocol):
    """What every estimator is: one sample's problem, a budget and a generator in, a SpectralResult out."""
    def __call__(self, problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
        """Estimate lambda_max(F) of ``problem`` within ``budget``, drawing only from ``rng``."""


_ESTIMATORS: dict[str, Estimator] = {}


def estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Register ``function`` as the estimator called ``name``."""

    def register(function: Estimator) -> Estimator:
        if name in _ESTIMATORS:
            raise ValueError(f"estimator {name!r} registered twice")
        _ESTIMATORS[name] = function
        return function

    return register


def get_estimator(name: str) -> Estimator:
    """The estimator registered as ``name``; an unknown name is an InputError listing the choices."""
    _load_builtin_estimators()
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(_ESTIMATORS))}") from None


def estimator_names() -> list[str]:
    """The registered estimator names, sorted (the choices of ``--method``)."""
    _load_builtin_estimators()
    return sorted(_ESTIMATORS)


def _load_builtin_estimators() -> None:
    """Import the modules that define estimators (each registers itself on import)."""
    from fimaudit.fisher import estimators  # noqa: F401
