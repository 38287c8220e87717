"""Imports every estimator module so that each registers itself (see registry.py)."""

from fimaudit.fisher import exact_estimator  # noqa: F401
