"""The shared ONNX Runtime pool (fimaudit/ort_threads.py): only in fimaudit's own processes.

The pool is process-wide and, once made, forbids per-session pools, so every test that makes one
runs in a fresh interpreter; this process (pytest's) must never get one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fimaudit import ort_threads
from fimaudit.runtime import _session_options

# A fresh interpreter's start: a one-Relu model and what makes its sessions.
RELU_MODEL = textwrap.dedent(
    """
    import numpy as np, onnx
    from onnx import helper
    import onnxruntime as ort
    from fimaudit import ort_threads
    from fimaudit.runtime import create_session
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    """
)

SCRIPT = RELU_MODEL + textwrap.dedent(
    """
    import threadpoolctl
    threadpoolctl.threadpool_limits(2, user_api="blas")  # two before, whatever the machine's cores
    ort_threads.share_process_pool()
    first, _ = create_session(model, threads=THREADS)
    second, _ = create_session(model, threads=None)  # another count: the same pool, a debug line
    x = np.array([-1.0, 2.0], dtype=np.float32)
    assert first.run(None, {"x": x})[0].tolist() == [0.0, 2.0]
    assert second.run(None, {"x": x})[0].tolist() == [0.0, 2.0]
    print("pool", ort_threads.pool_threads())
    from fimaudit.blas_threads import blas_threads
    print("blas", sorted(set(blas_threads())))  # numpy's and scipy's OpenBLAS, one thread each
    # Why the pool is opt-in: ONNX Runtime now refuses any session with a pool of its own.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        print("own pool accepted")
    except Exception as exc:
        print("own pool refused:", "use_per_session_threads" in str(exc))
    """
)


def _run(threads: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("THREADS", threads)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_shared_process_runs_every_session_on_one_pool_of_the_first_sessions_size() -> None:
    out = _run("2")
    assert "pool 2" in out
    assert "blas [1]" in out  # the pool owns the cores: BLAS's spinning workers would take one
    assert "own pool refused: True" in out  # the reason a library may not make one in its caller's process


def test_without_the_opt_in_sessions_keep_pools_of_their_own_without_spinning() -> None:
    assert ort_threads.pool_threads() is None  # pytest's process has no shared pool
    from fimaudit import blas_threads

    assert blas_threads._process_limit is None  # nor a process-wide BLAS limit
    options = _session_options(1)
    assert options.use_per_session_threads
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert ort_threads.pool_threads() is None


def test_the_command_and_python_m_opt_in() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert 'fimaudit = "fimaudit.cli:entry"' in (root / "pyproject.toml").read_text()
    assert "entry()" in (root / "fimaudit" / "__main__.py").read_text()
    done = subprocess.run(
        [sys.executable, "-c", "import fimaudit.cli as c, fimaudit.ort_threads as t, sys; sys.argv = ['fimaudit', '--version'];\n"
         "try:\n    c.entry()\nexcept SystemExit:\n    pass\nprint('shared', t._shared)"],
        capture_output=True, text=True, timeout=120,
    )
    assert "shared True" in done.stdout, done.stderr[-2000:]


ROW_PARALLEL = RELU_MODEL + textwrap.dedent(
    """
    ort_threads.share_process_pool()
    if SESSION_FIRST:
        create_session(model, threads=2)
    print("taken", ort_threads.prefer_row_parallel(2))
    session, _ = create_session(model, threads=2)
    assert session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist() == [0.0, 2.0]
    print("parts", ort_threads.row_parallel_parts(), "pool", ort_threads.pool_threads())
    """
)


@pytest.mark.parametrize(("session_first", "expected"), [(False, "taken True\nparts 2 pool 1"),
                                                         (True, "taken False\nparts 1 pool 2")])
def test_gradient_rows_in_parts_are_taken_only_before_the_first_session(session_first, expected) -> None:
    """prefer_row_parallel: a one-thread pool and two parts, unless the pool already exists."""
    done = subprocess.run([sys.executable, "-c", ROW_PARALLEL.replace("SESSION_FIRST", str(session_first))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected


def test_a_process_without_a_shared_pool_never_runs_rows_in_parts() -> None:
    assert not ort_threads.prefer_row_parallel(2)  # pytest's process: library use, per-session pools
    assert ort_threads.row_parallel_parts() == 1 and ort_threads.pool_threads() is None
