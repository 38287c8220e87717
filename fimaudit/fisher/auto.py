"""The ``auto`` method: exact when the K gradient rows are affordable, Lanczos otherwise.

The exact route pays for the whole Jacobian: K backward rows with gradient graphs, 2 d
evaluations with finite differences. Lanczos pays one jvp and one vjp per product. So:

- finite differences: exact while the dense Jacobian (2 d evaluations) costs at most 16 x the
  black-box sketch (fd_cost.fd_route), the black-box sketch beyond (a 3 x 224 x 224 input would
  need 301,056 evaluations per sample). Lanczos is never the choice: its first vjp builds the
  dense Jacobian anyway, and each jvp then costs two more evaluations;
- K <= 64: exact (a few dozen rows, no convergence question);
- K <= 2 x the Lanczos budget (its products cost a jvp and a vjp each): exact;
- otherwise (hundreds to thousands of classes): Lanczos on the K x K operator.

``diagnostics["method"]`` says which ran and ``diagnostics["auto_reason"]`` why.
"""

from __future__ import annotations

import numpy as np

from fimaudit.fisher import lanczos as lanczos_module
from fimaudit.fisher.blackbox import blackbox_lambda_max
from fimaudit.fisher.exact_estimator import exact
from fimaudit.fisher.fd_cost import fd_route
from fimaudit.fisher.operator import resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult

SMALL_CLASS_COUNT = 64


def choose_method(problem: SampleProblem, lanczos_matvecs: int, budget: int | None = None) -> tuple[str, str]:
    """("exact", "lanczos" or "blackbox", why) for this problem and gradient source.

    ``budget`` is the user's --budget, read as the black-box sketch's evaluations on the
    finite-difference route (None: its default).
    """
    classes = problem.num_classes
    if problem.jacobian.name == "fd":
        return fd_route(problem.input_size, budget)
    if classes <= SMALL_CLASS_COUNT:
        return "exact", f"K = {classes} <= {SMALL_CLASS_COUNT} classes"
    if classes <= 2 * lanczos_matvecs:
        return "exact", f"K = {classes} gradient rows <= 2 x {lanczos_matvecs} Lanczos products"
    return "lanczos", f"K = {classes} gradient rows > 2 x {lanczos_matvecs} Lanczos products"


@estimator("auto")
def auto(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Exact, Lanczos or black-box, whichever fits the problem (see the module doc).

    ``budget`` is the Lanczos products (default 100), or the black-box sketch's model
    evaluations (default 400) on the finite-difference route.
    """
    matvecs = resolve_budget(
        "auto", budget, lanczos_module.DEFAULT_MATVECS, lanczos_module.MINIMUM_MATVECS, "operator products"
    )
    method, reason = choose_method(problem, matvecs, budget)
    if method == "exact":
        result = exact(problem, None, rng)
    elif method == "blackbox":
        result = blackbox_lambda_max(problem, budget, rng)
    else:
        result = lanczos_module.lanczos_lambda_max(problem, matvecs, rng)
    result.diagnostics["method"] = method
    result.diagnostics["auto_reason"] = reason
    return result
