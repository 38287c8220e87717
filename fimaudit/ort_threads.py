"""ONNX Runtime's threads: one shared pool in fimaudit's own processes, per-session pools elsewhere.

Why a shared pool: each ONNX Runtime session owns an intra-op pool by default, and an audit
alternates sessions on every product (the logits, the kept forward halves, the VJP and JVP
gradient halves). Per-session pools either spin after each parallel section, and then the
previous session's spinning threads take the cores from the next one's run, or sleep, and then
every parallel kernel pays for waking a worker. Small-op graphs pay that hundreds of times per
run: the small ViT's 3x224x224 gradient halves (266 nodes, most of them under 50 us) alternate
22 times in a Lanczos run. One process-wide pool may spin between the runs, because the next run
uses the same threads. Measured with the per-sample Lanczos job of ``benchmarks/speed.py`` (the
small ViT, K = 1000, 22 products, 2 threads, medians of 8 rounds, three processes each,
alternated): 246-256 ms a sample with per-session pools, 210-212 ms on the shared pool; ResNet-18
at the same size 924-972 ms against 912-923 ms (its kernels are large: waking a worker is noise).

Why only in fimaudit's own processes: once ONNX Runtime has a global pool, every later session of
the process must use it (it refuses ``use_per_session_threads``), and its size is fixed. A
library must not impose that on the program that imports it (its own sessions would fail), so
the shared pool is opt-in: the ``fimaudit`` command (``cli.entry``) and the benchmarks that
stand for it call :func:`share_process_pool`; everything else keeps per-session pools without
spinning, as before. The pool takes the thread count of the first session made after the call
(the command passes none: ONNX Runtime's default, the physical cores); sessions share
it safely, concurrent runs included, and ``RunOptions.terminate`` stops a run on it as on its own.
"""

from __future__ import annotations

import logging
import os
import threading

import onnxruntime as ort
from onnxruntime.capi import _pybind_state

from fimaudit.blas_threads import one_blas_thread_for_process

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_shared = False
#: The shared pool's intra-op threads once made (0: ONNX Runtime's default); None before.
_pool_threads: int | None = None
#: Parts a many-row gradient run is split into, run side by side (1: no split; see prefer_row_parallel).
_row_parts = 1


def share_process_pool() -> None:
    """Run every session this process makes from now on on one shared pool (see the module doc).

    BLAS gets one thread in the process too (``blas_threads.one_blas_thread_for_process``): the
    pool owns the cores, and OpenBLAS's spinning workers would take one from its next run.
    """
    global _shared
    _shared = True
    one_blas_thread_for_process()


def configure(options: ort.SessionOptions, threads: int | None) -> None:
    """Put ``options`` on the shared pool when this process shares one, else on a pool of its own."""
    global _pool_threads
    wanted = int(threads) if threads else 0
    if _shared and hasattr(_pybind_state, "set_global_thread_pool_sizes"):  # absent: per-session pools
        with _lock:
            if _pool_threads is None:
                # Inter-op 1: fimaudit runs its graphs sequentially (ExecutionMode.ORT_SEQUENTIAL).
                _pybind_state.set_global_thread_pool_sizes(wanted, 1)
                _pool_threads = wanted
            elif _pool_threads != wanted:
                logger.debug("session asks for %d threads; the shared pool has %d", wanted, _pool_threads)
        options.use_per_session_threads = False
        return
    # A pool of its own does not spin: each session's spinning threads would take the cores
    # from the next session's run (measured on ResNet-18, 3x32x32, 10 one-hot cotangents,
    # 2 cores: logits + kept forward + gradient half 58-63 ms spinning, 22 ms without).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads


def prefer_row_parallel(threads: int | None = None) -> bool:
    """Before this process's first session: one thread per run, and many-row runs split into parts.

    Why: ONNX Runtime splits each kernel over the pool's threads, and a small model's kernels
    are too small for that to pay: the small ViT's 10-row gradient half at 3x32x32 (191 nodes,
    most under 20 us) ran in 4.35 ms on two threads and 5.1 ms on one, but in 2.9 ms as two
    5-row runs side by side on one thread each. ``row_parallel_parts`` tells the gradient
    sources how many parts to make (``threads``, or the cores this process may use); a run of
    one row (a forward half of one sample, a Lanczos product) then has one thread, which is why
    the audit asks for this only for small models on the exact route (audit.plan_threads).

    Only in a process that shares its pool (the command, the benchmarks) and only before the pool
    exists; returns whether the mode is on.
    """
    global _pool_threads, _row_parts
    parts = int(threads) if threads else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if parts < 2 or not (_shared and hasattr(_pybind_state, "set_global_thread_pool_sizes")):
        return False
    with _lock:
        if _pool_threads is not None:
            return _row_parts > 1
        _pybind_state.set_global_thread_pool_sizes(1, 1)
        _pool_threads = 1
        _row_parts = parts
    logger.info("small model on the exact route: gradient rows run in %d single-threaded parts side by side", parts)
    return True


def row_parallel_parts() -> int:
    """How many parts a many-row gradient run is split into (1 unless ``prefer_row_parallel`` is on)."""
    return _row_parts


def pool_threads() -> int | None:
    """The shared pool's size (0: ONNX Runtime's default), or None while this process has none."""
    return _pool_threads
