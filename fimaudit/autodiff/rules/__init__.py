"""Gradient rule families, one module per kind of op; importing this package registers them all.

To add a family: write ``fimaudit/autodiff/rules/<family>.py`` with ``@vjp_rule``/``@jvp_rule``
functions (contract in ``fimaudit/autodiff/registry.py``) and add one import line below.
"""

from fimaudit.autodiff.rules import (
    activations,  # noqa: F401
    elementwise,  # noqa: F401
    gather,  # noqa: F401
    linear,  # noqa: F401
    markers,  # noqa: F401
    ml,  # noqa: F401
    normalization,  # noqa: F401
    pooling,  # noqa: F401
    reduce,  # noqa: F401
    resize,  # noqa: F401
    scan,  # noqa: F401
    shape,  # noqa: F401
)
