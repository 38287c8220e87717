"""A model that never finishes: stopped by --timeout, by Ctrl-C (SIGINT) and by SIGTERM.

ONNX Runtime computes in C++ and Python signal handlers only run between bytecodes, so these
tests run the CLI in a subprocess on a Loop with 2^62 iterations and check that it stops in
time, with the exit status and the one line the user is promised, leaving no output file.
The child announces each ONNX Runtime run on a marker file (``runtime.run_session`` wrapped),
so the signal is sent while the Loop runs, whatever the machine's import time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from fimaudit import runtime
from fimaudit.audit import AuditConfig, run_audit
from fimaudit.autodiff.probe_shapes import ShapeProbe
from fimaudit.errors import ModelTimeoutError, ResourceError
from fimaudit.interrupts import Interrupted
from tests.hostile.long_models import endless_loop

ROOT = Path(__file__).resolve().parents[2]

# The CLI, with every ONNX Runtime run announced (CLOCK_MONOTONIC is the same for all processes).
CHILD = """
import os, sys, time
import fimaudit.runtime as runtime
original = runtime.run_session
def announced(*args, **kwargs):
    with open(os.environ["FIMAUDIT_TEST_MARKER"], "a") as marker:
        marker.write(f"{time.monotonic()}\\n")
    return original(*args, **kwargs)
runtime.run_session = announced
from fimaudit.cli import main
sys.argv[0] = "fimaudit"
main()
"""
STARTUP_S = 180  # imports and model preparation on a loaded 2-core CI machine


@pytest.fixture
def endless(tmp_path: Path) -> Path:
    path = tmp_path / "endless.onnx"
    onnx.save(endless_loop(), path)
    return path


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "runs.txt"
    env = {**os.environ, "FIMAUDIT_TEST_MARKER": str(marker), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return child, marker


def first_run_started(child: subprocess.Popen, marker: Path) -> float:
    """CLOCK_MONOTONIC when the child's first ONNX Runtime run began (waits for it)."""
    give_up = time.monotonic() + STARTUP_S
    while not (marker.exists() and marker.read_text().strip()):
        if child.poll() is not None:
            pytest.fail(f"the child ended before running the model: {child.communicate()}")
        if time.monotonic() > give_up:
            child.kill()
            pytest.fail("the child did not start running the model")
        time.sleep(0.05)
    return float(marker.read_text().split()[0])


def audit_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["audit", str(model), "--samples", "1", "--gradients", "fd",
            "--json", str(out / "audit.json"), "--report", str(out / "audit.html"), *extra]


def test_timeout_stops_an_endless_loop(tmp_path: Path, endless: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    child, marker = start(tmp_path, *audit_args(endless, out, "--timeout", "1"))
    began = first_run_started(child, marker)
    _, stderr = child.communicate(timeout=STARTUP_S)
    ended = time.monotonic()
    assert child.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fimaudit: error: a model evaluation ran longer than the limit of 1 s")
    assert "--timeout" in lines[0]
    assert ended - began < 1 + 3, f"stopped {ended - began:.1f} s after the run began"
    assert list(out.iterdir()) == []


def test_timeout_applies_to_jacobian(tmp_path: Path, endless: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((2, 4), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    child, marker = start(tmp_path, "jacobian", str(endless), "--data", str(data), "--out", str(out / "J.npy"),
                          "--timeout", "0.5")
    began = first_run_started(child, marker)
    _, stderr = child.communicate(timeout=STARTUP_S)
    assert child.returncode == 2, stderr
    assert "limit of 0.5 s" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert time.monotonic() - began < 0.5 + 3
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_running_model_within_two_seconds(tmp_path: Path, endless: Path, signum: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # No --timeout: the default (600 s) would not end this test; only the signal can.
    child, marker = start(tmp_path, *audit_args(endless, out))
    first_run_started(child, marker)
    time.sleep(1.0)  # well inside the Loop
    assert child.poll() is None
    sent = time.monotonic()
    child.send_signal(signum)
    try:
        _, stderr = child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the signal did not stop the run")
    stopped = time.monotonic() - sent
    assert child.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines() == [f"fimaudit: interrupted by {name}; stopped, no output written"]
    assert stopped < 2.0, f"stopped {stopped:.2f} s after {name}"
    assert list(out.iterdir()) == []


# ---- the same mechanism in process (fast) ------------------------------------------------


def _busy_run_threads() -> int:
    """Run threads that are not waiting for work (a leaked, still-running ONNX Runtime run)."""
    return sum(1 for thread in threading.enumerate() if thread.name == "fimaudit-onnxruntime-run") - runtime._RunThread._idle.qsize()


def test_run_session_times_out_and_frees_its_thread() -> None:
    session, _ = runtime.create_session(endless_loop())
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError, match=r"limit of 0\.3 s") as caught:
        runtime.run_session(session, None, {"x": np.zeros((1, 4), np.float32)}, timeout=0.3)
    assert isinstance(caught.value, ResourceError)
    assert time.monotonic() - started < 0.3 + 2
    assert _busy_run_threads() == 0
    finite, _ = runtime.create_session(endless_loop(trip_count=3))
    (logits,) = runtime.run_session(finite, None, {"x": np.zeros((2, 4), np.float32)}, timeout=30)
    assert logits.shape == (2, 3)


@pytest.mark.parametrize("parts", [0, 3], ids=["one-run", "three-parts"])
def test_an_exception_raised_while_waiting_terminates_the_run(parts: int) -> None:
    """What the SIGINT handler does, in process: Interrupted raised in the waiting main thread.

    With parts (``run_session_parts``) every part is stopped and every thread comes back.
    """
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    session, _ = runtime.create_session(endless_loop())
    feeds = {"x": np.zeros((1, 4), np.float32)}

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signal.SIGINT)

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            if parts:
                runtime.run_session_parts(session, None, [feeds] * parts, timeout=None)
            else:
                runtime.run_session(session, None, feeds, timeout=None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 0.5 + 1.5
    assert _busy_run_threads() == 0


def test_onnxruntime_errors_pass_through_run_session() -> None:
    session, _ = runtime.create_session(endless_loop(trip_count=3))
    with pytest.raises(Exception, match="(?i)invalid|dimension|shape|rank"):
        runtime.run_session(session, None, {"x": np.zeros((1, 5), np.float32)})
    assert _busy_run_threads() == 0


def test_the_library_audit_keeps_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "endless.onnx"
    onnx.save(endless_loop(), path)
    with pytest.raises(ModelTimeoutError):
        run_audit(AuditConfig(model_path=str(path), samples=1, gradients="fd", bounds=False, timeout=0.3))


def test_every_runner_has_the_same_default_limit() -> None:
    assert ShapeProbe(sample_shape=(4,)).timeout == runtime.DEFAULT_TIMEOUT_S
    assert AuditConfig(model_path="m.onnx").timeout == runtime.DEFAULT_TIMEOUT_S


def test_the_cli_gives_the_caller_its_signal_handlers_back() -> None:
    """Called as a library (CliRunner, a test runner, a notebook), the CLI installs its handlers for
    the run only: afterwards Ctrl-C is the caller's again."""
    import signal

    from click.testing import CliRunner

    from fimaudit.cli import main

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_parts_run_side_by_side_come_back_in_order() -> None:
    finite, _ = runtime.create_session(endless_loop(trip_count=3))
    parts = [{"x": np.full((rows, 4), rows, np.float32)} for rows in (1, 2, 3)]
    outputs = runtime.run_session_parts(finite, None, parts, timeout=30)
    assert [out[0].shape for out in outputs] == [(1, 3), (2, 3), (3, 3)]
    for part, (logits,) in zip(parts, outputs, strict=True):
        np.testing.assert_array_equal(logits, runtime.run_session(finite, None, part, timeout=30)[0])


def test_a_timeout_stops_every_part_and_frees_their_threads() -> None:
    """Two parts of an endless model: the limit holds for both together and both threads come back."""
    endless, _ = runtime.create_session(endless_loop())
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError, match=r"limit of 0\.3 s"):
        runtime.run_session_parts(endless, None, [{"x": np.zeros((1, 4), np.float32)}] * 2, timeout=0.3)
    assert time.monotonic() - started < 0.3 + 2
    assert _busy_run_threads() == 0


def test_a_failing_part_raises_once_the_others_are_done() -> None:
    finite, _ = runtime.create_session(endless_loop(trip_count=3))
    parts = [{"x": np.zeros((1, 4), np.float32)}, {"x": np.zeros((1, 5), np.float32)}]
    with pytest.raises(Exception, match="(?i)invalid|dimension|shape|rank"):
        runtime.run_session_parts(finite, None, parts, timeout=30)
    assert _busy_run_threads() == 0
