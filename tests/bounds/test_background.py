"""The bounds' global stage on its own thread: same numbers, errors surface, and it stops when asked."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fimaudit.audit as audit_module
from fimaudit.audit import AuditConfig, intake, prepare_model, run_audit
from fimaudit.bounds.background import BackgroundTask
from fimaudit.bounds.compose import BoundsCancelled
from fimaudit.bounds.fisher_bound import analyse_bounds, global_stage
from fimaudit.graph.architecture import recognise_architecture
from fimaudit.graph.selection import LOGITS
from tests.conftest import SAMPLES

MODEL = SAMPLES / "resnet_small.onnx"
DATA = SAMPLES / "digits_test.npy"


def _bound_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "fimaudit-bounds" and thread.is_alive()]


def test_task_returns_the_value_and_raises_the_error_in_the_owner() -> None:
    assert BackgroundTask(lambda cancelled: 41 + 1).start().result() == 42

    def fails(cancelled):
        raise ValueError("from the thread")

    with pytest.raises(ValueError, match="from the thread"):
        BackgroundTask(fails).start().result()


def test_cancel_stops_a_computation_at_its_next_check() -> None:
    checks = []

    def long(cancelled):
        while not cancelled():
            checks.append(1)
            time.sleep(0.01)
        raise BoundsCancelled("stopped")

    task = BackgroundTask(long, name="fimaudit-bounds").start()
    time.sleep(0.05)
    assert task.running
    task.cancel()
    assert not task.running and checks
    assert not _bound_threads()


def test_the_engine_checks_before_every_rule() -> None:
    taken = intake(str(MODEL))
    inputs = np.load(DATA)[:1].astype(np.float32)
    prepared = prepare_model(taken, AuditConfig(model_path=str(MODEL)), inputs[:1])
    with pytest.raises(BoundsCancelled):
        global_stage(prepared.logits_model, taken.selection.input_name, LOGITS, inputs[0], prepared.num_classes,
                     cancelled=lambda: True)


def test_an_audit_gets_the_same_bounds_as_the_inline_computation() -> None:
    config = AuditConfig(model_path=str(MODEL), data_path=str(DATA), samples=4, method="exact", cache=False)
    result = run_audit(config)
    assert result.bound is not None and result.bound.details["global_in_background"] is True
    assert result.bound.details["global_seconds"] > 0 and result.bound.details["seconds"] >= 0
    prepared, inputs = result.prepared, result.data.inputs
    logits = np.array([sample.logits for sample in result.samples], dtype=np.float64)
    inline = analyse_bounds(
        prepared.logits_model, prepared.selection.input_name, LOGITS, inputs, logits,
        [sample.value for sample in result.samples],
        recognise_architecture(prepared.loaded.proto, prepared.selection.input_name),
    )
    assert result.bound.value == inline.global_bound.value
    assert [sample.bound.value for sample in result.samples] == [bound.value for bound in inline.samples]


def test_a_failed_audit_leaves_no_bound_thread_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the gradient source failed")

    monkeypatch.setattr(audit_module, "make_source", broken)
    config = AuditConfig(model_path=str(MODEL), data_path=str(DATA), samples=2, method="exact", cache=False)
    with pytest.raises(RuntimeError, match="gradient source failed"):
        run_audit(config)
    assert not _bound_threads()
