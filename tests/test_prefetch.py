"""GraphJacobian.prefetch: several samples x K cotangents in one gradient run, answered per sample.

What must hold: the prefetched Jacobians equal the ones computed one sample at a time; B
samples cost one run, not B; a sample that was not prefetched (or another dtype of the same
values) is computed, not answered from the store; prefetching nothing empties it; each sample's
share of the run's evaluations (K + 1, as alone) is counted when its Jacobian is used.
"""

from __future__ import annotations

import numpy as np

from fimaudit.gradients.graph import GraphJacobian, graph_source
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner
from tests.conftest import linear_classifier


def source() -> GraphJacobian:
    weight = np.random.default_rng(0).standard_normal((10, 12))
    model = linear_classifier(weight)
    model.graph.output[0].name = LOGITS
    model.graph.node[-1].output[0] = LOGITS
    runner = ModelRunner(model, "x", [LOGITS], max_batch=64)
    return graph_source(runner, (12,), 10)


def test_prefetched_jacobians_are_the_computed_ones_in_one_run() -> None:
    jacobian = source()
    inputs = np.random.default_rng(1).standard_normal((4, 12)).astype(np.float32)
    one_by_one = np.concatenate([jacobian.dense(inputs[i : i + 1]) for i in range(4)])
    assert jacobian.samples_per_run == 6  # 64 rows // 10 classes
    runs, evaluations = jacobian.accounting.runs, jacobian.accounting.evaluations
    jacobian.prefetch(inputs)
    assert jacobian.accounting.runs == runs + 1
    assert jacobian.accounting.evaluations == evaluations  # counted when each sample's Jacobian is used
    for index in range(4):
        np.testing.assert_allclose(jacobian.dense(inputs[index : index + 1])[0], one_by_one[index], rtol=1e-6)
        assert jacobian.accounting.evaluations == evaluations + (index + 1) * 11  # K + 1 rows, as one alone
    assert jacobian.accounting.runs == runs + 1  # answered from the store
    jacobian.dense(inputs[:1] + 1)  # not prefetched: computed
    jacobian.dense(inputs[:1].astype(np.float64))  # same values, other dtype: computed
    assert jacobian.accounting.runs == runs + 3
    jacobian.prefetch(inputs[:0])
    jacobian.dense(inputs[:1])
    assert jacobian.accounting.runs == runs + 4
