"""BLAS's threads (numpy's and scipy's OpenBLAS): one where fimaudit's work leaves none spare.

Two uses, one reason: OpenBLAS hands each large enough call to worker threads that then spin for
a while, waiting for the next call, on cores something else needs.

- ``one_blas_thread()`` (scoped): the bounds' hundreds of small LAPACK calls, each of which
  would pay a hand-off to the workers (ResNet-18's Cholesky tests: 4.0 s on two threads, 0.38 s
  on one, at load 2.3 on 2 cores).
- ``one_blas_thread_for_process()`` (``ort_threads.share_process_pool`` calls it, so only in
  fimaudit's own processes): ONNX Runtime's shared pool owns the cores there, and the audit's
  numpy and scipy work between its runs is small (ARPACK on K-long vectors, the softmax
  covariance, one Gram of K rows). OpenBLAS's workers spinning after such a call took a core from
  the next gradient run: the small ViT's 3x224x224 Lanczos job (22 products, K = 1000) had every
  third gradient half at 6.5 ms instead of 2.4 ms, 172 ms a sample against 129 ms with one BLAS
  thread. A library does not impose this on the program that imports it, as with the pool.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_process_limit: Any = None  # the limiter kept for the process's lifetime (never restored)


@functools.lru_cache(maxsize=1)
def _controller() -> Any:
    import scipy.linalg.lapack  # noqa: F401  (loads scipy's own OpenBLAS, so the controller sees both)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS and LAPACK on one thread for the duration (numpy's and scipy's libraries alike)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield


def one_blas_thread_for_process() -> None:
    """BLAS and LAPACK on one thread from now on, in this whole process (see the module doc)."""
    global _process_limit
    with _lock:
        if _process_limit is None:
            _process_limit = _controller().limit(limits=1, user_api="blas")


def blas_threads() -> list[int]:
    """The thread counts of the BLAS libraries loaded now (numpy's, scipy's): what tests check."""
    return [int(info["num_threads"]) for info in _controller().info() if info.get("user_api") == "blas"]
