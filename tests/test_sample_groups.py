"""Sample groups (fimaudit/sample_groups.py): several samples' Jacobians in one run, the same numbers on every path.

What must hold: groups are fixed by index (group g = samples [g B, (g + 1) B)); the exact route on
the graph source groups (``auto`` where it takes exact), other estimators and sources do not;
serial, ``--workers 2``, a Dask cluster and a resume from a checkpoint that split groups give
identical documents with B = 3 and 8 samples (not a multiple of B); a resume recomputes the whole
group of a missing sample; the per-sample evaluation counts are those of one sample at a time; the
width is part of the checkpoint's identity (a restart takes the recorded width when it may, else is
refused).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fimaudit import sample_groups
from fimaudit.audit import AuditConfig, run_audit
from fimaudit.errors import InputError
from fimaudit.gradients import make_source
from fimaudit.gradients.graph import GraphJacobian, graph_source
from fimaudit.graph.selection import LOGITS
from fimaudit.report.document import build_document
from fimaudit.runtime import ModelRunner
from fimaudit.sample_audit import SampleAuditor
from fimaudit.sample_groups import SampleGroups, group_width
from tests.conftest import SAMPLES, linear_classifier
from tests.test_resume_parallel import numbers


def _config(**options) -> AuditConfig:
    base = {
        "model_path": str(SAMPLES / "vgg_small.onnx"),
        "data_path": str(SAMPLES / "digits_test.npy"),
        "samples": 8,
        "method": "exact",
        "bounds": False,
    }
    return AuditConfig(**{**base, **options})


def _document(**options) -> dict:
    return numbers(build_document(run_audit(_config(**options))))


@pytest.fixture
def width_three(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Groups of at most 3 samples; returns the row counts of every prefetch run (0: a release)."""
    monkeypatch.setattr(sample_groups, "MAX_GROUP", 3)
    sizes: list[int] = []
    original = GraphJacobian.prefetch

    def recording(self: GraphJacobian, inputs: np.ndarray) -> None:
        sizes.append(int(inputs.shape[0]))
        original(self, inputs)

    monkeypatch.setattr(GraphJacobian, "prefetch", recording)
    return sizes


def test_groups_are_fixed_by_index_and_chunks_hold_whole_groups() -> None:
    groups = SampleGroups(3, 8)
    assert [list(groups.members(i)) for i in (0, 4, 7)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert groups.split([1, 2, 5, 6, 7]) == [(range(0, 3), [1, 2]), (range(3, 6), [5]), (range(6, 8), [6, 7])]
    assert groups.chunks(list(range(8)), 2) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert groups.chunks([2, 3, 4, 7], 4) == [[2, 3, 4, 7]]
    assert SampleGroups(1, 8).chunks(list(range(8)), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]  # as before grouping


def test_only_the_dense_route_of_the_graph_source_groups() -> None:
    result = run_audit(_config(samples=1))
    runner, classes = result.prepared.runner, result.prepared.num_classes
    graph = make_source("graph", runner, (1, 8, 8), classes).source
    fd = make_source("fd", runner, (1, 8, 8), classes).source
    assert group_width(graph, "exact", None) == sample_groups.MAX_GROUP
    assert group_width(graph, "auto", None) == sample_groups.MAX_GROUP  # K = 10: auto takes exact
    for method in ("lanczos", "power", "hutchinson", "blackbox"):
        assert group_width(graph, method, None) == 1
    assert group_width(fd, "exact", None) == 1
    graph.max_rows = 50  # a tight memory plan: B x K rows take at most half the plan's rows
    assert group_width(graph, "exact", None) == 2
    fixed = run_audit(_config(samples=1, model_path=str(SAMPLES / "resnet_small.onnx"))).prepared
    one = make_source("graph", fixed.runner, (1, 8, 8), fixed.num_classes).source
    assert group_width(one, "exact", None) == 1  # a fixed batch of 1: nothing to widen


def test_serial_and_resumed_runs_with_split_groups_give_the_same_numbers(
    tmp_path: Path, width_three: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    audited: list[int] = []
    original = SampleAuditor.audit

    def recording(self: SampleAuditor, index: int, *args):
        audited.append(index)
        return original(self, index, *args)

    monkeypatch.setattr(SampleAuditor, "audit", recording)
    whole = _document(checkpoint_dir=str(tmp_path))
    assert width_three == [3, 0, 3, 0, 2, 0]  # groups {0,1,2}, {3,4,5}, {6,7}, each let go after use
    manifest = (tmp_path / "manifest.json").read_text()
    assert '"sample_group": 3' in manifest
    for index in (2, 5, 6):  # one sample of every group lost, as if killed while writing them
        (tmp_path / "samples" / f"{index:08d}.json").unlink()
    width_three.clear()
    audited.clear()
    assert _document(checkpoint_dir=str(tmp_path)) == whole
    assert width_three == [3, 0, 3, 0, 2, 0]  # each missing sample's whole group recomputed ...
    assert audited == [2, 5, 6]  # ... but only the missing samples audited again
    assert sorted(n for n in os.listdir(tmp_path / "samples") if n.endswith(".json")) == [
        f"{i:08d}.json" for i in range(8)
    ]
    assert _document() == whole


def test_grouped_evaluation_counts_are_those_of_one_sample_at_a_time(
    monkeypatch: pytest.MonkeyPatch, width_three: list[int]
) -> None:
    grouped = run_audit(_config())
    monkeypatch.setattr(sample_groups, "MAX_GROUP", 1)
    single = run_audit(_config())
    assert [s.result.model_evaluations for s in grouped.samples] == [11] * 8  # K + 1 rows each
    assert [s.result.model_evaluations for s in single.samples] == [11] * 8
    assert grouped.model_evaluations == single.model_evaluations
    np.testing.assert_allclose([s.value for s in grouped.samples], [s.value for s in single.samples], rtol=1e-6)


def test_a_restart_takes_the_recorded_width_or_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_groups, "MAX_GROUP", 3)
    first = _document(samples=4, checkpoint_dir=str(tmp_path))
    (tmp_path / "samples" / "00000001.json").unlink()
    monkeypatch.setattr(sample_groups, "MAX_GROUP", 8)  # more memory now: the checkpoint's groups kept
    assert _document(samples=4, checkpoint_dir=str(tmp_path)) == first
    (tmp_path / "samples" / "00000001.json").unlink()
    monkeypatch.setattr(sample_groups, "MAX_GROUP", 2)  # less memory now: refused, naming the width
    with pytest.raises(InputError, match=r"sample_group: 3 then, 2 now"):
        run_audit(_config(samples=4, checkpoint_dir=str(tmp_path)))


def test_auto_groups_only_where_it_takes_the_exact_route() -> None:
    model = linear_classifier(np.random.default_rng(0).standard_normal((300, 12)))
    model.graph.output[0].name = LOGITS
    model.graph.node[-1].output[0] = LOGITS
    source = graph_source(ModelRunner(model, "x", [LOGITS], max_batch=4096), (12,), 300)
    assert group_width(source, "auto", None) == 1  # K = 300 > 2 x 100 products: Lanczos, one sample's products
    assert group_width(source, "auto", 200) == 6  # K <= 2 x 200: exact; 4096 rows // (2 x 300)
    assert group_width(source, "exact", None) == 6


@pytest.mark.slow  # two spawned processes import fimaudit and ONNX Runtime
def test_two_local_workers_with_split_groups_give_one_process_numbers(width_three: list[int]) -> None:
    assert _document(workers=2) == _document()


def test_dask_with_split_groups_gives_one_process_numbers(width_three: list[int]) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        clustered = _document(scheduler=cluster.scheduler_address)
    assert sorted(size for size in width_three if size) == [2, 3, 3]  # whole groups on the workers
    assert clustered == _document()
