"""The three-way verdict (fimaudit/verdict.py): pass, fail or inconclusive, from values,
intervals, bounds and checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fimaudit.statistics import STATISTICS, statistic, summarise
from fimaudit.verdict import statistic_bracket
from tests.report.helpers import gradient_check, judged, sample


def verdict_of(samples, **options):
    return judged(samples, **options).verdict


def test_exact_values_pass_and_fail_on_the_statistic() -> None:
    samples = [sample(0, 1.0), sample(1, 2.0), sample(2, 5.0)]
    passed = verdict_of(samples, threshold=5.0)
    assert passed.status == "pass" and passed.passed is True and passed.interval is None
    failed = verdict_of(samples, threshold=4.0)
    assert failed.status == "fail" and failed.passed is False
    assert "1 of 3 samples above it" in failed.reason
    by_median = verdict_of(samples, threshold=4.0, statistic="median")
    assert by_median.status == "pass" and "median lambda_max 2 " in by_median.reason


def test_no_threshold_passes_but_names_failed_checks() -> None:
    samples = [sample(0, 1.0)]
    plain = verdict_of(samples)
    assert plain.status == "no_threshold" and plain.passed is True
    broken = verdict_of(samples, gradients="graph", check=gradient_check("failed"))
    assert broken.status == "no_threshold" and "gradient check failed" in broken.reason


def test_interval_straddling_the_threshold_is_inconclusive() -> None:
    samples = [sample(0, 1.0), sample(1, 9.0, "estimate", [8.0, 12.0])]
    verdict = verdict_of(samples, threshold=10.0)
    assert verdict.status == "inconclusive" and verdict.passed is False
    assert verdict.to_dict()["interval"] == [8.0, 12.0]
    assert "straddles the threshold 10" in verdict.reason


def test_intervals_clear_of_the_threshold_decide() -> None:
    samples = [sample(0, 1.0, "estimate", [0.5, 1.5]), sample(1, 9.0, "estimate", [8.0, 9.5])]
    assert verdict_of(samples, threshold=10.0).status == "pass"
    failing = verdict_of(samples, threshold=7.0)
    assert failing.status == "fail" and "at least 8" in failing.reason


def test_lower_bounds_can_fail_but_never_pass() -> None:
    below = verdict_of([sample(0, 3.0, "lower_bound")], threshold=10.0)
    assert below.status == "inconclusive" and "no upper limit" in below.reason
    assert below.to_dict()["interval"] == [3.0, None]
    assert verdict_of([sample(0, 30.0, "lower_bound")], threshold=10.0).status == "fail"


def test_upper_bounds_can_pass() -> None:
    assert verdict_of([sample(0, 3.0, "upper_bound"), sample(1, 4.0)], threshold=10.0).status == "pass"


@pytest.mark.parametrize("options, failed", [
    ({"check": gradient_check("failed")}, "gradient check"),
    ({"check": gradient_check("passed", adjoint="failed")}, "gradient check"),
    ({"bound": 0.5}, "analytic bound >= measured"),
])
def test_a_failed_sanity_check_makes_a_clear_pass_inconclusive(options, failed) -> None:
    verdict = verdict_of([sample(0, 1.0), sample(1, 2.0)], threshold=100.0, gradients="graph", **options)
    assert verdict.status == "inconclusive" and verdict.passed is False
    assert f"the {failed} failed" in verdict.reason


def test_statistics_are_computed_one_way() -> None:
    values = np.array([0.3, 5.0, 1.2, 7.7, 0.01, 2.0])
    summary = summarise(values)
    assert summary.p95 == pytest.approx(np.percentile(values, 95)) and summary.median == pytest.approx(1.6)
    for name in STATISTICS:
        assert statistic(values, name) == summary[name]
    with pytest.raises(ValueError, match="unknown statistic"):
        statistic(values, "p99")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.01, 100.0), st.floats(0.0, 0.5), st.floats(0.0, 1.0), st.sampled_from(["exact", "estimate", "lower_bound", "upper_bound"])),
             min_size=1, max_size=12),
    st.sampled_from(STATISTICS),
    st.floats(0.05, 120.0),
)
def test_pass_and_fail_are_never_wrong_when_the_truth_is_inside_the_intervals(entries, name, threshold) -> None:
    """Whatever true values lie inside each sample's interval or bound, a pass or fail is right."""
    samples, truths = [], []
    for index, (truth, width, position, kind) in enumerate(entries):
        if kind == "estimate":
            low = truth * (1 - width * position)
            high = low + truth * width + 1e-12
            samples.append(sample(index, (low + high) / 2, kind, [low, high]))
        elif kind == "lower_bound":
            samples.append(sample(index, truth * (1 - width), kind))
        elif kind == "upper_bound":
            samples.append(sample(index, truth * (1 + width), kind))
        else:
            samples.append(sample(index, truth, kind))
        truths.append(truth)
    verdict = verdict_of(samples, threshold=threshold, statistic=name)
    true_statistic = statistic(np.array(truths), name)
    low, high = statistic_bracket(samples, name)
    assert low <= true_statistic * (1 + 1e-9) + 1e-12
    assert high is None or true_statistic <= high * (1 + 1e-9) + 1e-12
    if verdict.status == "pass":
        assert true_statistic <= threshold * (1 + 1e-9)
    if verdict.status == "fail":
        assert true_statistic > threshold * (1 - 1e-9)


def test_an_unconverged_estimate_can_fail_but_not_pass() -> None:
    unconverged = {"converged": False}
    high = [sample(0, 30.0, "estimate", [29.0, 31.0], diagnostics=unconverged), sample(1, 1.0)]
    assert verdict_of(high, threshold=10.0).status == "fail"
    low = [sample(0, 3.0, "estimate", [2.9, 3.1], diagnostics=unconverged), sample(1, 1.0)]
    verdict = verdict_of(low, threshold=10.0)
    assert verdict.status == "inconclusive" and "1 estimates did not converge" in verdict.reason
    converged = [sample(0, 3.0, "estimate", [2.9, 3.1], diagnostics={"converged": True})]
    assert verdict_of(converged, threshold=10.0).status == "pass"


def test_a_gradient_check_that_did_not_decide_does_not_make_the_audit_inconclusive() -> None:
    undecided = gradient_check("not_decided")
    verdict = verdict_of([sample(0, 1.0), sample(1, 2.0)], threshold=100.0, gradients="graph", check=undecided)
    assert verdict.status == "pass" and verdict.passed is True
    assert "the gradient check did not decide" in verdict.reason
    failing = verdict_of([sample(0, 1.0), sample(1, 2.0)], threshold=1.5, gradients="graph", check=undecided)
    assert failing.status == "fail"
    broken = verdict_of([sample(0, 1.0)], threshold=100.0, gradients="graph", check=gradient_check("failed"))
    assert broken.status == "inconclusive"


def test_an_unknown_statistic_is_an_input_error() -> None:
    from fimaudit.errors import InputError

    with pytest.raises(InputError, match="choose from max, p95, mean, median"):
        verdict_of([sample(0, 1.0)], threshold=1.0, statistic="p99")
