"""Imports every estimator module so that each registers itself (see registry.py)."""

from fimaudit.fisher import (  # noqa: F401
    auto,
    blackbox,
    exact_estimator,
    hutchinson,
    lanczos,
    power,
)
