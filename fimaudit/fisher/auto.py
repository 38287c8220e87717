"""The ``auto`` method: exact when the K gradient rows are affordable, Lanczos otherwise.

The exact route pays for the whole Jacobian: K backward rows with gradient graphs, 2 d
evaluations with finite differences. Lanczos pays one jvp and one vjp per product. So:

- finite differences: exact. Its first vjp builds the dense Jacobian anyway, and each jvp then
  costs two more evaluations, so Lanczos can only cost more;
- K <= 64: exact (a few dozen rows, no convergence question);
- K <= 2 x the Lanczos budget (its products cost a jvp and a vjp each): exact;
- otherwise (hundreds to thousands of classes): Lanczos on the K x K operator.

``diagnostics["method"]`` says which ran and ``diagnostics["auto_reason"]`` why.
"""

from __future__ import annotations

import numpy as np

from fimaudit.fisher import lanczos as lanczos_module
from fimaudit.fisher.exact_estimator import exact
from fimaudit.fisher.operator import resolve_budget
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import estimator
from fimaudit.fisher.result import SpectralResult

SMALL_CLASS_COUNT = 64


def choose_method(problem: SampleProblem, lanczos_matvecs: int) -> tuple[str, str]:
    """("exact" or "lanczos", why) for this problem and gradient source."""
    classes = problem.num_classes
    if getattr(problem.jacobian, "name", "") == "fd":
        return "exact", "finite differences: the dense Jacobian is the cheapest route"
    if classes <= SMALL_CLASS_COUNT:
        return "exact", f"K = {classes} <= {SMALL_CLASS_COUNT} classes"
    if classes <= 2 * lanczos_matvecs:
        return "exact", f"K = {classes} gradient rows <= 2 x {lanczos_matvecs} Lanczos products"
    return "lanczos", f"K = {classes} gradient rows > 2 x {lanczos_matvecs} Lanczos products"


@estimator("auto")
def auto(problem: SampleProblem, budget: int | None, rng: np.random.Generator) -> SpectralResult:
    """Exact or Lanczos (see module doc); ``budget`` = Lanczos products (default 100)."""
    matvecs = resolve_budget(
        "auto", budget, lanczos_module.DEFAULT_MATVECS, lanczos_module.MINIMUM_MATVECS, "operator products"
    )
    method, reason = choose_method(problem, matvecs)
    if method == "exact":
        result = exact(problem, None, rng)
    else:
        result = lanczos_module.lanczos_lambda_max(problem, matvecs, rng)
    result.diagnostics["method"] = method
    result.diagnostics["auto_reason"] = reason
    return result
