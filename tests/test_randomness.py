"""Random streams: every part of an audit draws from its own child of SeedSequence(--seed)."""

from __future__ import annotations

import numpy as np
import pytest

from fimaudit.audit import AuditConfig, intake, prepare_model, run_audit
from fimaudit.data import load_data
from fimaudit.fisher.problem import SampleProblem
from fimaudit.fisher.registry import get_estimator
from fimaudit.gradients import FiniteDerivatives, make_source
from fimaudit.randomness import RandomStreams
from tests.conftest import SAMPLES


def test_streams_are_the_seed_sequence_children() -> None:
    root = np.random.SeedSequence(7).spawn(3)
    expected = {
        "data": root[0], "check": root[1], "sample 4": root[2].spawn(5)[4],
    }
    streams = RandomStreams(7)
    found = {"data": streams.data(), "check": streams.gradient_check(), "sample 4": streams.sample(4)}
    for name, sequence in expected.items():
        assert np.array_equal(found[name].standard_normal(8), np.random.default_rng(sequence).standard_normal(8)), name


def test_no_two_streams_share_draws() -> None:
    """The data and sample 0's estimator once both drew from default_rng(seed)."""
    streams = RandomStreams(0)
    draws = [streams.data(), streams.gradient_check(), *(streams.sample(i) for i in range(4))]
    firsts = [rng.standard_normal(16) for rng in draws]
    assert len({first.tobytes() for first in firsts}) == len(firsts)
    assert not np.array_equal(RandomStreams(0).data().standard_normal(16), np.random.default_rng(0).standard_normal(16))


@pytest.mark.parametrize("method", ["blackbox", "hutchinson"])
def test_a_sample_gets_the_same_randomised_result_alone_and_among_others(method: str) -> None:
    """Sample 3 of an audit of samples 0..4 equals sample 3 estimated on its own (same seed, same
    index): its stream depends on the seed and its index only, not on the draws of samples 0..2."""
    model, data_path = str(SAMPLES / "mlp.onnx"), str(SAMPLES / "digits_test.npy")
    config = AuditConfig(model_path=model, data_path=data_path, samples=5, method=method, gradients="fd",
                         seed=11, budget=40, bounds=False)
    audited = run_audit(config).samples[3].result

    taken = intake(model)
    data = load_data(data_path, taken.selection, 5, config.seed)
    prepared = prepare_model(taken, config, probe=data.inputs[:1], extra=data.extra_feeds)
    source = make_source("fd", prepared.runner, prepared.selection.sample_shape, prepared.num_classes).source
    logits = source.logits(data.inputs)[3]  # as the audit computes them: one batch
    problem = SampleProblem(sample=data.inputs[3], logits=logits, jacobian=FiniteDerivatives(source, 3))
    alone = get_estimator(method)(problem, config.budget, RandomStreams(config.seed).sample(3))
    assert alone.value == audited.value
    assert alone.interval == audited.interval
    other_seed = get_estimator(method)(problem, config.budget, RandomStreams(config.seed + 1).sample(3))
    assert other_seed.value != audited.value  # the result is randomised: the test can tell streams apart
