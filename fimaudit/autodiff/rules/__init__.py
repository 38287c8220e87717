"""Gradient rule families, one module per kind of op; importing this package registers them all.

To add a family: write ``fimaudit/autodiff/rules/<family>.py`` with ``@vjp_rule``/``@jvp_rule``
functions (contract in ``fimaudit/autodiff/registry.py``) and add one import line below.
"""

from fimaudit.autodiff.rules import elementwise  # noqa: F401
from fimaudit.autodiff.rules import markers  # noqa: F401
from fimaudit.autodiff.rules import activations  # noqa: F401
from fimaudit.autodiff.rules import linear  # noqa: F401
from fimaudit.autodiff.rules import shape  # noqa: F401
from fimaudit.autodiff.rules import normalization  # noqa: F401
from fimaudit.autodiff.rules import reduce  # noqa: F401
from fimaudit.autodiff.rules import gather  # noqa: F401
from fimaudit.autodiff.rules import pooling  # noqa: F401
from fimaudit.autodiff.rules import resize  # noqa: F401
from fimaudit.autodiff.rules import scan  # noqa: F401
from fimaudit.autodiff.rules import ml  # noqa: F401
