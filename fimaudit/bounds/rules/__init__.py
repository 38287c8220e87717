"""Bound rules, one module per op family; importing this package registers them all."""

from fimaudit.bounds import folding  # noqa: F401  (registers FoldedBatchNorm)
from fimaudit.bounds.rules import activations, conv, dense, elementwise, normalization, pooling, structure  # noqa: F401
