"""Certify rules, one module per kind of op; importing this package registers them all."""

from fimaudit.certify.rules import activations, affine, elementwise, pooling, resize, structure  # noqa: F401
