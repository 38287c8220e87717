"""Estimators on the bundled sample models, against the exact K x K value.

``frozen`` problems answer jvp/vjp from the sample's own finite-difference Jacobian, so they test
the estimators alone; the raw finite-difference and gradient-graph sources test them as the audit
runs them (where agreement is limited by the source's own accuracy).
"""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.fisher.auto import choose_method
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.fisher.registry import get_estimator
from tests.fisher.fakes import frozen, random_problem, sample_model_problems
from tests.fisher.test_estimator_properties import check_claim

MODELS = ("mlp", "vgg_small", "resnet_small", "densenet_small", "vit_small", "binary_sigmoid")


@pytest.fixture(scope="module", params=MODELS)
def model_problems(request):
    return request.param, sample_model_problems(request.param, 4)


def test_estimators_on_frozen_sample_jacobians(model_problems) -> None:
    model, problems = model_problems
    for index, problem in enumerate(problems):
        known = frozen(problem)
        exact = known.lambda_max
        for name in ("lanczos", "power", "hutchinson", "auto", "exact"):
            result = get_estimator(name)(known.problem, None, np.random.default_rng(index))
            check_claim(result, exact)
            if name in ("lanczos", "power"):
                assert result.diagnostics["converged"], (model, index, name, result.diagnostics)
            if name == "hutchinson":  # Hutch++ with a sketch of 20 >= K - 1 columns: the exact trace
                assert result.trace == pytest.approx(known.trace, rel=1e-8)


def test_estimators_on_the_finite_difference_source(model_problems) -> None:
    """As the audit runs them: within the finite-difference source's accuracy of exact."""
    model, problems = model_problems
    for index, problem in enumerate(problems):
        exact = exact_lambda_max(problem.jacobian.dense(problem.sample[None])[0], problem.logits).value
        auto = get_estimator("auto")(problem, None, np.random.default_rng(0))
        assert auto.diagnostics["method"] == "exact" and auto.kind == "exact"
        for name in ("lanczos", "power"):
            result = get_estimator(name)(problem, None, np.random.default_rng(index))
            assert result.value == pytest.approx(exact, rel=3e-2), (model, name)
            assert result.diagnostics["gradient_source"] == "fd"
            assert result.model_evaluations > 0


def test_lanczos_and_power_on_gradient_graphs_match_exact() -> None:
    problems = sample_model_problems("mlp", 4, gradients="graph")
    for index, problem in enumerate(problems):
        exact = get_estimator("exact")(problem, None, np.random.default_rng(0)).value
        for name in ("lanczos", "power"):
            result = get_estimator(name)(problem, None, np.random.default_rng(index))
            assert result.diagnostics["converged"], (name, result.diagnostics)
            assert result.value == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize(
    "classes, source, method",
    [(10, "fd", "exact"), (1000, "fd", "exact"), (10, "graph", "exact"), (150, "graph", "exact"), (300, "graph", "lanczos")],
)
def test_auto_chooses_by_classes_and_source(classes: int, source: str, method: str) -> None:
    known = random_problem(np.random.default_rng(0), classes=classes, size=8, decay=0.5)
    known.problem.jacobian.name = source
    assert choose_method(known.problem, 100)[0] == method


def test_auto_runs_lanczos_for_many_classes() -> None:
    known = random_problem(np.random.default_rng(1), classes=260, size=280, decay=0.9)
    known.problem.jacobian.name = "graph"
    result = get_estimator("auto")(known.problem, None, np.random.default_rng(0))
    assert result.diagnostics["method"] == "lanczos"
    check_claim(result, known.lambda_max)
    assert result.model_evaluations < 260  # fewer rows than the K of the exact route
