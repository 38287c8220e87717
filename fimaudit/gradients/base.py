"""Input Jacobians of the logits: the interface every gradient source implements.

A source answers three questions about the logits z(x) of one model, for samples x of the
chosen input: the dense Jacobian (K x d per sample), Jacobian-vector products J v (forward mode)
and vector-Jacobian products J^T u (reverse mode). Estimators and the gradient check only use
this interface, so they work the same on finite differences and on gradient graphs derived from
the ONNX graph; how a source is built is ``fimaudit.gradients.make_source``'s business.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from fimaudit.errors import ModelError
from fimaudit.runtime import RunAccounting

#: The source that ran: gradient graphs or central finite differences.
SourceName = Literal["graph", "fd"]


class GradientKind(str, enum.Enum):
    """What ``--gradients`` asks for: a source, or ``auto`` (graphs, falling back to differences)."""

    AUTO = "auto"
    GRAPH = "graph"
    FD = "fd"


class InputJacobian(Protocol):
    """Logits and their derivatives with respect to the chosen input."""

    #: "fd" for finite differences, "graph" for gradient graphs (test fakes use their own names).
    name: str
    #: Number of logits K.
    num_classes: int
    #: Flattened size d of one sample.
    input_size: int
    #: The float type the model computes its scores in (its input's type in ONNX Runtime).
    dtype: np.dtype

    # Read-only in the protocol: sources compute these (properties) or copy them (attributes).
    @property
    def accounting(self) -> RunAccounting:
        """Model evaluations paid so far (rows through ONNX Runtime, all graphs together)."""

    @property
    def chunk_rows(self) -> int | None:
        """The most rows one model run should carry (the memory plan's batch); None: no limit."""

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits [N, K] for samples [N, ...]."""

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """The Jacobians [N, K, d] (float64) for samples [N, ...]."""

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """J v for one sample [...] and tangents [M, d]: returns [M, K] (float64)."""

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """J^T u for one sample [...] and cotangents [M, K]: returns [M, d] (float64)."""

    def forward_mode_unavailable(self) -> str | None:
        """None when J v is computed independently of J^T u; else why it is derived from it.

        The gradient check's adjoint identity then has nothing independent to compare.
        """

    def settings(self) -> dict[str, Any]:
        """The settings that decide the source's accuracy, as the report records them."""


class JacobianCache:
    """The dense Jacobian of the last sample asked for, kept for repeated products on it.

    Estimators ask for many J v (or J^T u) on one sample in a row; a source that answers them
    from the dense K x d Jacobian (finite differences, or graphs without a forward-mode graph)
    computes it once per sample. The key is the sample's bytes, so a different sample (or the
    same values in another dtype) recomputes.
    """

    def __init__(self, compute: Callable[[np.ndarray], np.ndarray]) -> None:
        self._compute = compute
        self._key: bytes | None = None
        self._value: np.ndarray | None = None

    def __call__(self, sample: np.ndarray) -> np.ndarray:
        """The Jacobian [K, d] (float64) of ``sample``, computed only when the sample changed."""
        key = sample.tobytes()
        if self._value is None or key != self._key:
            self._value = self._compute(sample)
            self._key = key
        return self._value


@dataclass(frozen=True)
class SourceChoice:
    """What ``make_source`` built: the source, which kind it is, and why (the report's note)."""

    source: InputJacobian
    kind: SourceName
    reason: str


def expect_products(source: object, sample: np.ndarray) -> None:
    """Tell ``source`` that a matrix-free estimator will now ask many products at ``sample``.

    Why a hint and not a count: a graph source runs its forward-mode model whole (the forward
    pass again in every run) until one sample has had many J v runs, because the gradient check
    makes only a few and splitting costs two more ONNX Runtime sessions; an estimator that will
    make tens of products (Lanczos at K = 1000: 22) says so up front and every one of them skips
    the forward pass. Optional: a source without ``expect_products`` (finite differences, test
    fakes) ignores it, and the hint changes which runs compute a product, never its value's
    meaning. It depends only on the estimator chosen for the sample, so every executor makes the
    same runs.
    """
    hint = getattr(source, "expect_products", None)
    if hint is not None:
        hint(sample)


def gram_product(source: object, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray | None:
    """J J^T u for cotangents [M, K] in one step where ``source`` offers it, else None.

    Optional like ``expect_products``: a graph source of a small model runs its two gradient
    halves as one model (autodiff/fused_gram.py), others answer None and the caller runs vjp then
    jvp. Looked up on the class, never through a wrapper's ``__getattr__``, and not forwarded by
    ``ForwardingJacobian``: a wrapper that changes the Jacobian (pixel coordinates, an embedding
    mask) must not pass on its inner source's product; those that do not change it say so.
    """
    method = getattr(type(source), "gram_product", None)
    return None if method is None else method(source, sample, cotangents)


class ForwardingJacobian:
    """A gradient source that is ``source`` in everything a subclass does not override.

    Why: the wrappers around a source (the NaN/Inf guard, the dense memo, pixel coordinates)
    each change one or two methods of the protocol; the rest is forwarded here, once.
    """

    def __init__(self, source: InputJacobian) -> None:
        self.source = source
        self.name = source.name
        self.num_classes = source.num_classes
        self.input_size = source.input_size
        self.dtype = source.dtype

    @property
    def accounting(self) -> RunAccounting:
        """The wrapped source's accounting."""
        return self.source.accounting

    @property
    def chunk_rows(self) -> int | None:
        """The wrapped source's batch."""
        return self.source.chunk_rows

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The wrapped source's logits."""
        return self.source.logits(inputs)

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """The wrapped source's Jacobians."""
        return self.source.dense(inputs)

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """The wrapped source's J v."""
        return self.source.jvp(sample, tangents)

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """The wrapped source's J^T u."""
        return self.source.vjp(sample, cotangents)

    def forward_mode_unavailable(self) -> str | None:
        """The wrapped source's answer."""
        return self.source.forward_mode_unavailable()

    def expect_products(self, sample: np.ndarray) -> None:
        """Passed on to the wrapped source (see ``expect_products``)."""
        expect_products(self.source, sample)

    def settings(self) -> dict[str, Any]:
        """The wrapped source's settings."""
        return self.source.settings()


class FiniteDerivatives(ForwardingJacobian):
    """A gradient source that refuses NaN or Inf derivatives of one sample with a ModelError.

    Infinite gradients with finite scores (Sqrt or Log at 0, a Div by an input near 0) would
    otherwise reach the estimators: LAPACK reports "eigenvalues did not converge", ARPACK stops,
    and a Lanczos run could report a lower bound of 0. Everything else is the wrapped source's.
    """

    def __init__(self, source: InputJacobian, sample_index: int) -> None:
        super().__init__(source)
        self._index = sample_index

    def _checked(self, what: str, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values).all():
            raise ModelError(
                f"the model's derivatives are NaN or Inf at sample {self._index} ({what}) while its "
                "scores are finite (e.g. Sqrt or Log at 0); its Fisher information is undefined there"
            )
        return values

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """The wrapped source's Jacobians, refused when not finite."""
        return self._checked("Jacobian", self.source.dense(inputs))

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """The wrapped source's J v, refused when not finite."""
        return self._checked("Jacobian-vector product", self.source.jvp(sample, tangents))

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """The wrapped source's J^T u, refused when not finite."""
        return self._checked("vector-Jacobian product", self.source.vjp(sample, cotangents))

    def gram_product(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray | None:
        """The wrapped source's J J^T u (``gram_product``), refused when not finite; None without one."""
        product = gram_product(self.source, sample, cotangents)
        return None if product is None else self._checked("Gram product", product)
