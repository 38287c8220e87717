"""Attacks: DeepFool against the closed form on linear softmax models, verification, PGD, quadratic check, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fimaudit.attacks import (
    Forward,
    InputRange,
    deepfool,
    kl_divergence,
    perturbation_norm,
    pgd_at_radii,
    quadratic_regime,
)
from fimaudit.attacks.correlation import rank_correlation
from fimaudit.audit import RunnerSettings, intake, prepare_model
from fimaudit.cli import main
from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.gradients import make_source
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner
from tests.conftest import SAMPLES

K, D = 5, 8


def linear64(weight: np.ndarray, bias: np.ndarray):
    """z = W x + b in float64 end to end (ONNX Runtime runs DOUBLE Gemm): the closed form is exact."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], [LOGITS], transB=1)],
        "linear64",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", weight.shape[1]])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.DOUBLE, ["N", weight.shape[0]])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    runner = ModelRunner(model, "x", [LOGITS])
    source = make_source("graph", runner, (weight.shape[1],), weight.shape[0]).source
    return runner, source


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(11)
    weight, bias = rng.normal(size=(K, D)), rng.normal(size=K)
    runner, source = linear64(weight, bias)
    return weight, bias, runner, source, rng.normal(size=(12, D))


def closed_form(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, norm: str) -> float:
    """min_k |z_c - z_k| / ||w_c - w_k||_* : the distance to the nearest other class's half-space."""
    z = weight @ x + bias
    c = int(np.argmax(z))
    dual = 1 if norm == "inf" else 2
    return min(abs(z[c] - z[k]) / np.linalg.norm(weight[k] - weight[c], ord=dual) for k in range(K) if k != c)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_deepfool_matches_the_closed_form_on_linear_softmax(linear, norm) -> None:
    weight, bias, runner, source, inputs = linear
    forward = Forward(runner, source.dtype)
    assert source.dtype == np.float64
    for x in inputs:
        result = deepfool(source, forward, x, norm)
        assert result.verified and result.method == "deepfool+bisection+fmn"
        exact = closed_form(weight, bias, x, norm)
        # The verified example lies on the far side of the boundary: never below the true minimum.
        assert result.epsilon_min is not None and result.epsilon_min >= exact * (1 - 1e-12)
        assert result.epsilon_min == pytest.approx(exact, rel=1e-6)


def test_every_reported_example_is_reverified(linear) -> None:
    weight, bias, runner, source, inputs = linear
    forward = Forward(runner, source.dtype, InputRange(-3.0, 3.0))
    for x in inputs:
        result = deepfool(source, forward, x, "2")
        if not result.verified:
            assert result.epsilon_min is None and result.reason
            continue
        example = result.example
        assert example is not None and example.min() >= -3.0 and example.max() <= 3.0
        (logits,) = runner.run(example[None])
        assert int(np.argmax(logits[0])) == result.adversarial_class != result.original_class
        origin = forward.applied(x[None])[0]
        applied = perturbation_norm((example - origin)[None], "2")[0]  # the norm of what was applied, exactly
        assert result.epsilon_min == applied == pytest.approx(float(np.linalg.norm(example - origin)), rel=1e-14)
        assert set(result.to_dict()) >= {"norm", "epsilon_min", "verified", "method", "evaluations", "adversarial_class"}


@pytest.fixture(scope="module")
def mlp():
    data = np.load(SAMPLES / "digits_test.npy")[:8]
    taken = intake(str(SAMPLES / "mlp.onnx"))
    prepared = prepare_model(taken, RunnerSettings(), probe=data[:1])
    source = make_source("graph", prepared.runner, data.shape[1:], prepared.num_classes).source
    return prepared.runner, source, data


@pytest.mark.parametrize("norm,radii", [("inf", [0.01, 0.03, 0.1, 0.3]), ("2", [0.05, 0.2, 0.5, 1.0, 3.0])])
def test_pgd_success_is_monotone_in_eps_and_verified(mlp, norm, radii) -> None:
    runner, source, data = mlp
    forward = Forward(runner, source.dtype, InputRange(0.0, 1.0))
    outcomes = [pgd_at_radii(source, forward, x, radii, norm, np.random.default_rng(i)) for i, x in enumerate(data)]
    rates = [np.mean([o.success[i] for o in outcomes]) for i in range(len(radii))]
    assert all(a <= b for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[0] < 1 and rates[-1] == 1, rates
    for outcome in outcomes:
        for eps, hit in zip(outcome.radii, outcome.success, strict=True):
            assert hit == (outcome.smallest_norm is not None and outcome.smallest_norm <= eps)


def test_deepfool_on_the_mlp_is_verified_and_pgd_agrees(mlp) -> None:
    runner, source, data = mlp
    forward = Forward(runner, source.dtype, InputRange(0.0, 1.0))
    for x in data[:4]:
        result = deepfool(source, forward, x, "inf")
        assert result.verified and result.epsilon_min is not None
        assert int(np.argmax(runner.run(result.example[None])[0])) == result.adversarial_class


def test_quadratic_regime_on_linear_softmax(linear) -> None:
    weight, bias, runner, source, inputs = linear
    forward = Forward(runner, source.dtype)
    x = inputs[0]
    logits = weight @ x + bias
    spectral = exact_lambda_max(weight, logits)
    check = quadratic_regime(forward, x, spectral.eigenvector, spectral.value)
    # KL computed through the model equals the analytic one of the linear logits.
    shifted = logits[None] + np.array(check.t)[:, None] * (weight @ spectral.eigenvector)[None]
    assert np.allclose(check.kl_plus, kl_divergence(logits, shifted), rtol=1e-9, atol=1e-15)
    ratios = np.array(check.kl_plus) / np.array(check.quadratic)
    assert ratios[0] == pytest.approx(1.0, rel=1e-2)
    assert check.radius is not None and check.t[0] <= check.radius < check.t[-1]
    assert abs(ratios[-1] - 1) > 0.1  # far out, the softmax saturates


def test_rank_correlation_of_a_monotone_relation_is_one() -> None:
    lam = np.linspace(0.1, 5, 20)
    eps: list[float | None] = list(1 / lam**0.5)
    eps[3] = None
    result = rank_correlation(lam, eps, np.random.default_rng(0), resamples=200)
    assert result.spearman == pytest.approx(1.0) and result.kendall == pytest.approx(1.0)
    assert result.count == 19 and result.unpaired == 1
    assert result.spearman_interval is not None and result.spearman_interval[0] <= 1.0


def test_cli_attack_writes_json_and_adversarial_examples(tmp_path) -> None:
    out, adv = tmp_path / "attack.json", tmp_path / "adv.npy"
    result = CliRunner().invoke(main, [
        "attack", str(SAMPLES / "mlp.onnx"), "--data", str(SAMPLES / "digits_test.npy"), "--samples", "4",
        "--norm", "inf", "--attack-eps", "0.03,0.3", "--input-range", "0,1", "--json", str(out),
        "--save-adversarial", str(adv),
    ])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert len(document["samples"]) == 4
    for sample in document["samples"]:
        assert set(sample["attack"]) >= {"norm", "epsilon_min", "verified", "method", "evaluations", "adversarial_class"}
    summary = document["attack_summary"]
    assert [row["eps"] for row in summary["success_rate_by_eps"]] == [0.03, 0.3]
    examples = np.load(adv)
    assert examples.shape == (4, 1, 8, 8)
    assert "correlation" in result.output and "linf eps 0.3: attack success" in result.output
