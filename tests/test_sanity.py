"""The gradient check: passes correct gradients, fails wrong ones, says *not decided* when it cannot tell."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from fimaudit.audit import AuditConfig, intake, prepare_model
from fimaudit.cli import main
from fimaudit.data import load_data
from fimaudit.gradients import FiniteDifferenceJacobian, make_source
from fimaudit.gradients.finite_differences import default_step
from fimaudit.sanity import FAILED, NOT_APPLICABLE, NOT_DECIDED, PASSED, gradient_check
from tests.conftest import SAMPLES, linear_classifier

SAMPLE_MODELS = ["mlp.onnx", "mlp_softmax.onnx", "mlp_constants.onnx", "binary_sigmoid.onnx",
                 "vgg_small.onnx", "resnet_small.onnx", "densenet_small.onnx", "vit_small.onnx"]


def sources(model_path: str, data_path: str | None, samples: int = 3):
    """(graph source, finite-difference source, inputs) for a model, as the audit builds them."""
    config = AuditConfig(model_path=str(model_path), data_path=data_path, samples=samples, gradients="graph")
    taken = intake(config.model_path)
    data = load_data(config.data_path, taken.selection, samples, 0)
    prepared = prepare_model(taken, config, probe=data.inputs[:1], extra=data.extra_feeds)
    graph = make_source("graph", prepared.runner, prepared.selection.sample_shape, prepared.num_classes)
    assert graph.kind == "graph"
    fd = make_source("fd", prepared.runner, prepared.selection.sample_shape, prepared.num_classes)
    return graph.source, fd.source, data.inputs


def flat_model(tmp_path, gain: float):
    """logits = 1e3 + gain * W x: gradients tiny against the logits (a flat, well-trained model)."""
    weight = np.random.default_rng(0).standard_normal((10, 20))
    path = tmp_path / f"flat_{gain:g}.onnx"
    onnx.save(linear_classifier(gain * weight, np.full(10, 1e3)), path)
    return path


def old_check_error(graph, fd: FiniteDifferenceJacobian, inputs: np.ndarray) -> float:
    """The check as it was: default step x (1, 1/3, 1/10), best step per direction, median, 5%."""
    rng = np.random.default_rng(0)
    errors = []
    for sample in inputs[:3]:
        tangents = rng.standard_normal((16, sample.size))
        tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
        ours = graph.jvp(sample, tangents)
        per_step = []
        for factor in (1.0, 1 / 3, 1 / 10):
            reference = FiniteDifferenceJacobian(fd.runner, fd.sample_shape, fd.num_classes, relative_step=default_step(np.float32) * factor)
            theirs = reference.jvp(sample, tangents)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                per_step.append(np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1))
        with np.errstate(over="ignore", invalid="ignore"):
            errors.append(float(np.median(np.nan_to_num(np.min(per_step, axis=0), nan=np.inf))))
    return max(errors)


@pytest.mark.parametrize("gain", [1e-4, 1e-2])
def test_flat_model_is_never_failed_and_the_audit_passes(tmp_path, gain) -> None:
    path = flat_model(tmp_path, gain)
    graph, fd, inputs = sources(path, None)
    assert old_check_error(graph, fd, inputs) > 0.05  # the old check cried wolf here
    check = gradient_check(graph, fd.central_differences, inputs, np.random.default_rng(0))
    assert check.status in (PASSED, NOT_DECIDED)
    assert check.fd_status != FAILED and check.adjoint_status == PASSED
    document_path = tmp_path / "audit.json"
    result = CliRunner().invoke(main, ["audit", str(path), "--gradients", "graph", "--samples", "3", "--no-bounds",
                                       "--fail-above", "1e30", "--json", str(document_path)])
    assert result.exit_code == 0, result.output
    document = json.loads(document_path.read_text())
    recorded = next(c for c in document["checks"] if c["name"] == "gradient_check")
    assert recorded["status"] == check.status
    assert document["verdict"]["status"] == "pass"
    if check.status == NOT_DECIDED:
        assert "did not decide" in document["verdict"]["reason"]


class Wrong:
    """A GraphJacobian with a deliberate bug in its forward (jvp) or reverse (vjp) products."""

    def __init__(self, inner, jvp=None, vjp=None) -> None:
        self.inner, self._jvp, self._vjp = inner, jvp, vjp
        self.num_classes, self.input_size, self.name = inner.num_classes, inner.input_size, inner.name

    def forward_mode_unavailable(self):
        return self.inner.forward_mode_unavailable()

    def jvp(self, sample, tangents):
        out = self.inner.jvp(sample, tangents)
        return self._jvp(out) if self._jvp else out

    def vjp(self, sample, cotangents):
        return self._vjp(self.inner, sample, cotangents) if self._vjp else self.inner.vjp(sample, cotangents)


def scaled(out):
    return 1.3 * out


def one_class_flipped(out):
    flipped = out.copy()
    flipped[:, 2] *= -1.0
    return flipped


@pytest.mark.parametrize("bug", [scaled, one_class_flipped])
def test_a_wrong_forward_gradient_fails_both_parts(bug) -> None:
    graph, fd, inputs = sources(SAMPLES / "mlp.onnx", str(SAMPLES / "digits_test.npy"))
    check = gradient_check(Wrong(graph, jvp=bug), fd.central_differences, inputs, np.random.default_rng(0))
    assert check.fd_status == FAILED and check.adjoint_status == FAILED
    assert check.status == FAILED and not check.passed
    assert check.to_dict()["status"] == "failed" and check.to_dict()["passed"] is False


def test_a_wrong_reverse_gradient_fails_the_adjoint_identity() -> None:
    """J v from the forward graph is right (finite differences agree); J^T w has one class's sign
    flipped: only the adjoint identity can see it, and it fails the check."""
    graph, fd, inputs = sources(SAMPLES / "vgg_small.onnx", str(SAMPLES / "digits_test.npy"))

    def flipped_class(inner, sample, cotangents):
        weights = np.array(cotangents, dtype=np.float64)
        weights[:, 4] *= -1.0  # the reverse rule gets class 4's gradient with the wrong sign
        return inner.vjp(sample, weights)

    check = gradient_check(Wrong(graph, vjp=flipped_class), fd.central_differences, inputs, np.random.default_rng(0))
    assert check.fd_status == PASSED
    assert check.adjoint_status == FAILED and check.status == FAILED
    worst = max(outcome.discrepancies.max() / outcome.tolerance for outcome in check.adjoint)
    assert worst > 100


def test_without_a_forward_graph_the_adjoint_identity_is_not_applicable() -> None:
    graph, fd, inputs = sources(SAMPLES / "mlp.onnx", str(SAMPLES / "digits_test.npy"))

    class ReverseOnly(Wrong):
        def forward_mode_unavailable(self):
            return "JVP rule missing for Foo"

    check = gradient_check(ReverseOnly(graph), fd.central_differences, inputs, np.random.default_rng(0))
    assert check.adjoint_status == NOT_APPLICABLE and check.status == PASSED
    assert "JVP rule missing for Foo" in check.to_dict()["adjoint"]["reason"]
    wrong = gradient_check(ReverseOnly(graph, jvp=scaled), fd.central_differences, inputs, np.random.default_rng(0))
    assert wrong.status == FAILED  # finite differences alone still catch it


def test_noise_above_the_tolerance_is_not_decided_not_failed() -> None:
    """A differencer whose outputs are pure rounding noise (a constant model rounded at 1e3)."""
    rng = np.random.default_rng(3)
    matrix = 1e-6 * rng.standard_normal((5, 12))

    class Exact:
        num_classes, input_size, name = 5, 12, "matrix"

        def jvp(self, sample, tangents):
            return tangents @ matrix.T

        def vjp(self, sample, cotangents):
            return cotangents @ matrix

        def forward_mode_unavailable(self):
            return None

    def noisy(sample, tangents, step):
        displacements = 2 * step * tangents
        values = 1e3 + displacements @ matrix.T / 2
        plus = (values + 1e3 * 6e-8 * rng.standard_normal(values.shape)).astype(np.float32).astype(np.float64)
        minus = (1e3 - displacements @ matrix.T / 2).astype(np.float32).astype(np.float64)
        return plus - minus, displacements, np.abs(plus) + np.abs(minus), plus + minus - 2e3

    check = gradient_check(Exact(), noisy, rng.standard_normal((3, 12)), np.random.default_rng(0))
    assert check.fd_status == NOT_DECIDED and check.status == NOT_DECIDED
    assert all(outcome.decided.sum() == 0 for outcome in check.finite_differences)


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_sample_models_pass(name) -> None:
    graph, fd, inputs = sources(SAMPLES / name, str(SAMPLES / "digits_test.npy"))
    check = gradient_check(graph, fd.central_differences, inputs, np.random.default_rng(0))
    assert check.status == PASSED, check.to_dict()
    assert check.adjoint_status == PASSED
    assert all(outcome.decided.sum() >= 12 for outcome in check.finite_differences)


def maxpool_model(tmp_path):
    """x [1, 1, 4, 4] -> MaxPool 2x2 -> Flatten -> Gemm (3 classes): kinks wherever a window ties."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)],
        "maxpool_ties",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "maxpool_ties.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_max_pool_ties_at_the_sample_are_not_decided_not_failed(tmp_path) -> None:
    """Every window tied at x (a constant image, as MNIST's zero background makes them): the logits
    are not differentiable there. Central differences average the two one-sided slopes at every
    step while the graph follows the first maximum; the second-difference term of the error bound
    says so. Without that term this correct graph failed in most directions."""
    path = maxpool_model(tmp_path)
    data = tmp_path / "ties.npy"
    np.save(data, np.zeros((3, 1, 4, 4), np.float32))
    graph, fd, inputs = sources(path, str(data))
    check = gradient_check(graph, fd.central_differences, inputs, np.random.default_rng(0))
    assert check.status == NOT_DECIDED, check.to_dict()
    assert check.adjoint_status == PASSED

    def without_kink_term(sample, tangents, step):
        differences, displacements, magnitudes, _second = fd.central_differences(sample, tangents, step)
        return differences, displacements, magnitudes, np.zeros_like(differences)

    blind = gradient_check(graph, without_kink_term, inputs, np.random.default_rng(0))
    assert blind.fd_status == FAILED  # what the check said before the kink term

    # Away from ties the same graph is checked and passes: the term does not blunt the check.
    away = np.random.default_rng(1).standard_normal((3, 1, 4, 4)).astype(np.float32)
    passed = gradient_check(graph, fd.central_differences, away, np.random.default_rng(0))
    assert passed.status == PASSED, passed.to_dict()


def scaled_by(factor: float):
    def bug(out):
        return factor * out

    return bug


@pytest.mark.parametrize("name", ["vgg_small.onnx", "resnet_small.onnx"])
def test_a_ten_percent_wrong_gradient_fails_where_the_right_one_passes(name) -> None:
    """ReLU kinks and max pooling over digits with zero backgrounds (ties): the correct graph passes,
    the same graph with J v 10% too large fails in (almost) every decided direction."""
    graph, fd, inputs = sources(SAMPLES / name, str(SAMPLES / "digits_test.npy"))
    right = gradient_check(graph, fd.central_differences, inputs, np.random.default_rng(0))
    assert right.status == PASSED, right.to_dict()
    wrong = gradient_check(Wrong(graph, jvp=scaled_by(1.1)), fd.central_differences, inputs, np.random.default_rng(0))
    assert wrong.fd_status == FAILED and wrong.status == FAILED
    for outcome in wrong.finite_differences:
        assert outcome.disagreeing.sum() >= outcome.decided.sum() - 1 and outcome.decided.sum() >= 12


@pytest.mark.parametrize(("name", "bug"), [("vgg_small.onnx", None), ("resnet_small.onnx", None),
                                           ("vit_small.onnx", None), ("resnet_small.onnx", scaled_by(1.1)),
                                           ("vgg_small.onnx", one_class_flipped)])
def test_early_stopping_reaches_the_full_scans_verdicts_with_fewer_runs(name, bug) -> None:
    """Settling a direction once the steps still to come cannot change its verdict (sanity.py,
    "Evaluated lazily") gives the verdict of every step evaluated, per direction, for right and
    wrong gradients alike, and runs the model on fewer rows."""
    from fimaudit.sanity import GRADIENT_CHECK_DIRECTIONS, compare_directions

    graph, fd, inputs = sources(SAMPLES / name, str(SAMPLES / "digits_test.npy"), samples=2)
    checked = Wrong(graph, jvp=bug)
    tangents = np.random.default_rng(1).standard_normal((GRADIENT_CHECK_DIRECTIONS, inputs[0].size))
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    rows, outcomes = {}, {}
    for early in (False, True):
        before = fd.accounting.evaluations
        outcomes[early] = [compare_directions(checked, fd.central_differences, sample, tangents, early_stop=early)
                           for sample in inputs]
        rows[early] = fd.accounting.evaluations - before
    for lazy, every in zip(outcomes[True], outcomes[False], strict=True):
        assert np.array_equal(lazy.decided, every.decided)
        assert np.array_equal(lazy.disagreeing, every.disagreeing)
        assert lazy.status == every.status
    assert rows[True] < rows[False]


def test_a_column_of_steps_differences_like_one_call_per_step() -> None:
    """The check hands several steps to the differencer in one batch: the same displacements and,
    within the outputs' float32 rounding, the same differences as one call per step."""
    _, fd, inputs = sources(SAMPLES / "vgg_small.onnx", str(SAMPLES / "digits_test.npy"), samples=1)
    tangents = np.random.default_rng(2).standard_normal((4, inputs[0].size))
    steps = [1e-2, 1e-3, 1e-4]
    column = np.repeat(steps, 4)[:, None]
    together = fd.central_differences(inputs[0], np.tile(tangents, (3, 1)), column)
    apart = [np.concatenate(parts) for parts in
             zip(*(fd.central_differences(inputs[0], tangents, step) for step in steps), strict=True)]
    assert np.array_equal(together[1], apart[1])  # the represented displacements
    rounding = 8 * 6e-8 * apart[2].max()
    for index in (0, 2, 3):  # differences, magnitudes, second differences
        got, expected = together[index], apart[index]
        np.testing.assert_allclose(got, expected, rtol=0, atol=rounding)


@pytest.mark.parametrize("name", ["vgg_small.onnx", "mlp.onnx"])
def test_the_checks_progress_counts_every_round_of_every_sample_once(name) -> None:
    """progress(done, total) rises by one per round up to samples x round_count, the rounds no
    direction needed included (mlp settles all 16 directions in the first round, vgg_small one
    sample there and the other in the second)."""
    from fimaudit.sanity import round_count

    graph, fd, inputs = sources(SAMPLES / name, str(SAMPLES / "digits_test.npy"), samples=2)
    calls: list[tuple[int, int]] = []
    check = gradient_check(graph, fd.central_differences, inputs, np.random.default_rng(0), count=2,
                           progress=lambda done, total: calls.append((done, total)))
    total = 2 * round_count()
    assert round_count() == 3
    assert calls == [(done, total) for done in range(1, total + 1)]
    assert check.status == PASSED
