"""fimaudit's gradient-source interface answered by PyTorch: the same estimator, torch's products.

Why: at K = 1000 ``--method auto`` runs Lanczos (scipy ``eigsh`` on the K x K operator
C^{1/2} J J^T C^{1/2}, fisher/lanczos.py), one vjp and one jvp per product. "PyTorch doing the
same estimator" is therefore the same driver (same start vector from the same random stream,
same tolerance, same budget, same float64 K x K arithmetic) with PyTorch computing J^T u and
J v on the same weights. Reusing fimaudit's driver, not a re-implementation of ARPACK's implicit
restarts, is what makes the two sides run the same algorithm; the timings then differ only in
the products, and the driver's own cost (a few ms) is paid alike.

PyTorch's products, as a careful user would write them:

- J^T u: one forward pass per sample with the graph kept (``torch.func.vjp``), then one backward
  pass per product (what fimaudit's VJP graph cannot do: it re-runs the forward each time);
- J v, two ways (the benchmark times both and compares with the faster):
  ``forward``: forward-mode AD (``torch.func.jvp``), the forward pass and the tangent together;
  ``double-backward``: the vjp graph built once per sample with ``create_graph``, then J v as the
  gradient of <J^T u, v> with respect to u, one pass through the backward graph per product.

Weights are frozen (``requires_grad_(False)``) so no pass computes weight gradients; fimaudit's
graphs skip them too. Attention runs as its composite ("math") form, without the fused
multi-head-attention fast path: PyTorch's fused CPU kernels have neither forward-mode AD nor a
double backward (torch 2.14), so without this neither jvp mode runs on the ViT at all.

Benchmark-only: needs torch, which fimaudit never does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from fimaudit.runtime import RunAccounting

JVP_MODES = ("forward", "double-backward")


@contextlib.contextmanager
def differentiable_attention() -> Iterator[None]:
    """Attention in composite ops that both jvp modes can differentiate (see the module doc)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


class TorchJacobian:
    """J v and J^T u of one torch model's logits for one sample at a time (the InputJacobian protocol)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, sample_shape: tuple[int, ...], num_classes: int, jvp_mode: str) -> None:
        if jvp_mode not in JVP_MODES:
            raise ValueError(f"jvp_mode must be one of {JVP_MODES}, got {jvp_mode!r}")
        self.model = model.eval().requires_grad_(False)
        self.sample_shape = tuple(sample_shape)
        self.input_size = int(np.prod(sample_shape))
        self.num_classes = num_classes
        self.dtype = np.dtype(np.float32)
        self.jvp_mode = jvp_mode
        self._accounting = RunAccounting()
        self._key: bytes | None = None
        self._vjp: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._jvp: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def accounting(self) -> RunAccounting:
        """Rows evaluated: one per logits row, vjp and jvp product (and one per sample's forward)."""
        return self._accounting

    @property
    def chunk_rows(self) -> int | None:
        """No batching limit: Lanczos sends one vector per product."""
        return None

    def settings(self) -> dict[str, Any]:
        """What decides the products: torch's version and the jvp mode."""
        return {"source": "torch", "torch": torch.__version__, "jvp_mode": self.jvp_mode}

    def forward_mode_unavailable(self) -> str | None:
        """J v is computed independently of J^T u in both modes."""
        return None

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits [N, K] of samples [N, ...] in one forward pass."""
        self._accounting.add(int(inputs.shape[0]))
        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """Not needed at K = 1000 (Lanczos); the 3x32x32 table times dense Jacobians its own way."""
        raise NotImplementedError("TorchJacobian answers products only; see benchmarks/jacobian_speed.py")

    def forget(self) -> None:
        """Drop the kept forward pass: the next product pays it again (as a new sample would)."""
        self._key = self._vjp = self._jvp = None

    def _linearise(self, sample: np.ndarray) -> None:
        """The per-sample forward pass (with the graphs the products reuse), once per sample."""
        key = np.ascontiguousarray(sample).tobytes()
        if key == self._key:
            return
        x = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32)).reshape(1, *self.sample_shape)
        self._accounting.add(1)
        with differentiable_attention():
            self._build_products(x)
        self._key = key

    def _build_products(self, x: torch.Tensor) -> None:
        """The two product closures for input ``x`` [1, ...] in this source's jvp mode."""
        if self.jvp_mode == "forward":
            _, vjp_fn = torch.func.vjp(self.model, x)
            self._vjp = lambda u: vjp_fn(u.reshape(1, -1))[0]
            self._jvp = lambda v: torch.func.jvp(self.model, (x,), (v.reshape(x.shape),))[1]
        else:
            x = x.clone().requires_grad_(True)
            logits = self.model(x)
            seed = torch.zeros_like(logits, requires_grad=True)
            (gradient,) = torch.autograd.grad(logits, x, seed, create_graph=True)
            self._vjp = lambda u: torch.autograd.grad(logits, x, u.reshape(logits.shape), retain_graph=True)[0]
            self._jvp = lambda v: torch.autograd.grad(gradient, seed, v.reshape(x.shape), retain_graph=True)[0]

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """J^T u for cotangents [M, K]: [M, d] (float64), one backward pass each."""
        self._linearise(sample)
        assert self._vjp is not None
        return self._products(self._vjp, cotangents, self.input_size)

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """J v for tangents [M, d]: [M, K] (float64), one pass each (see the module doc)."""
        self._linearise(sample)
        assert self._jvp is not None
        return self._products(self._jvp, tangents, self.num_classes)

    def _products(self, product, vectors: np.ndarray, width: int) -> np.ndarray:
        """``product`` of every row of ``vectors`` (float32 in torch), counted, as float64 rows of ``width``."""
        rows = []
        for vector in np.asarray(vectors, dtype=np.float32):
            self._accounting.add(1)
            with differentiable_attention():
                rows.append(product(torch.from_numpy(vector)).reshape(-1).detach().numpy().astype(np.float64))
        return np.stack(rows) if rows else np.zeros((0, width))


def forward_flops(model: torch.nn.Module, sample_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass at batch 1 by PyTorch's FlopCounterMode (2 x multiply-adds).

    Counted on the torch model, so both exports of a network get the same count: the ONNX-graph
    counter of speed.py loses the activation shapes behind the TorchScript ViT's Reshapes at
    224x224 (0.105 against 0.161 GFLOP). On the CNNs the two counters agree to the FLOP.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), differentiable_attention(), counter:
        model(torch.zeros((1, *sample_shape)))
    return float(counter.get_total_flops())
