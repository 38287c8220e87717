"""Resume and parallel runs give the numbers of one uninterrupted process.

A sample's result depends on its index only (randomness.py, sample_audit.py), so neither a
SIGKILL and restart with --checkpoint, nor --workers 2, nor a Dask LocalCluster changes a number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.errors import InputError
from fimaudit.report.document import build_document
from tests.conftest import SAMPLES

# What may differ between runs: timings, when they ran, and the finite-difference cost estimate
# (a timed forward run).
TIMING = {"seconds", "created_at", "started_at", "environment", "fd_cost"}


def numbers(document: dict) -> dict:
    """The document without timings (recursively)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(document)


def _config(**options) -> AuditConfig:
    base = {
        "model_path": str(SAMPLES / "mlp.onnx"),
        "data_path": str(SAMPLES / "digits_test.npy"),
        "samples": 8,
        "bounds": False,
    }
    return AuditConfig(**{**base, **options})


def _document(**options) -> dict:
    return numbers(build_document(run_audit(_config(**options))))


@pytest.mark.slow  # two CLI processes (about 5 s each on an idle 2-core machine)
def test_sigkill_then_resume_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "fimaudit",
        "audit",
        str(SAMPLES / "mlp.onnx"),
        "--data",
        str(SAMPLES / "digits_test.npy"),
        "--samples",
        "20",
        "--method",
        "hutchinson",
        "--budget",
        "60",
        "--no-bounds",
        "-q",
        "--checkpoint",
        str(tmp_path / "ck"),
        "--json",
        str(tmp_path / "resumed.json"),
    ]
    done = tmp_path / "ck" / "samples"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if done.is_dir() and len([n for n in os.listdir(done) if n.endswith(".json")]) >= 3:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len([n for n in os.listdir(done) if n.endswith(".json")])
    assert 3 <= finished < 20, "the run was not killed mid-way"
    assert not (tmp_path / "resumed.json").exists()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    resumed = numbers(json.loads((tmp_path / "resumed.json").read_text()))
    whole = _document(samples=20, method="hutchinson", budget=60)
    assert resumed == whole


def test_a_checkpoint_of_another_audit_is_refused_naming_the_difference(tmp_path: Path) -> None:
    run_audit(_config(samples=2, checkpoint_dir=str(tmp_path)))
    with pytest.raises(InputError, match=r"holds a different audit.*seed: 0 then, 1 now"):
        run_audit(_config(samples=2, seed=1, checkpoint_dir=str(tmp_path)))
    changed = np.load(SAMPLES / "digits_test.npy")
    changed[1, 0, 3, 3] += 0.5
    np.save(tmp_path.parent / "digits_test.npy", changed)  # same name, one value changed
    with pytest.raises(InputError, match=r"data_sha256: '[0-9a-f]+' then, '[0-9a-f]+' now"):
        run_audit(_config(samples=2, data_path=str(tmp_path.parent / "digits_test.npy"), checkpoint_dir=str(tmp_path)))


@pytest.mark.slow  # two spawned processes import fimaudit and ONNX Runtime
def test_two_local_workers_give_one_process_numbers() -> None:
    # A randomised estimator; every estimator runs through the same worker code in the Dask test.
    options = {"method": "hutchinson", "budget": 40}
    assert _document(workers=2, **options) == _document(**options)


@pytest.mark.parametrize("method", ["auto", "exact", "lanczos", "power", "hutchinson", "blackbox"])
def test_dask_local_cluster_gives_one_process_numbers(dask_scheduler: str, method: str) -> None:
    options = {"method": method, "samples": 6}
    assert _document(scheduler=dask_scheduler, **options) == _document(**options)


@pytest.fixture(scope="module")
def dask_scheduler():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def test_a_sample_result_does_not_depend_on_which_samples_ran_before_it() -> None:
    """Samples audited in reverse order, each by a fresh auditor or one shared, give the audit's results."""
    from fimaudit.gradients import make_source
    from fimaudit.sample_audit import SampleAuditor, SampleSettings

    result = run_audit(_config(method="hutchinson", budget=30))
    prepared = result.prepared
    shape = tuple(result.data.inputs.shape[1:])
    source = make_source("graph", prepared.runner, shape, prepared.num_classes).source
    settings = SampleSettings("hutchinson", 30, 0)
    shared = SampleAuditor(source, settings)
    for index in reversed(range(len(result.samples))):
        expected = result.samples[index]
        for auditor in (shared, SampleAuditor(source, settings)):
            got = auditor.audit(index, result.data.inputs[index], expected.logits, None)
            assert (got.value, got.interval) == (expected.value, expected.interval)
