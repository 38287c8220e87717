"""Gradients in embedding space: padded positions masked out, per-sample integer feeds switched in.

A text model audited with ``--wrt embeddings`` differentiates with respect to the embedding sum
[L, H] of each sample. Two things differ from an ordinary input:

- **Padding**: positions with ``attention_mask == 0`` are not part of the text; perturbing them is
  not a perturbation of the input. The Fisher matrix is taken over the real positions only:
  J P with P the 0/1 diagonal of kept positions, so F = P J^T C J P. The wrapper zeroes a tangent's
  padded blocks before J v and the padded blocks of J^T u after; dense Jacobians get zero columns.
  The top eigenvector is then exactly zero at padded positions.
- **Per-sample integer inputs** (attention_mask, token_type_ids, input_ids where the graph still
  reads them): a runner feeds one row of its other inputs to every run; the wrapper writes the
  sample's rows into that feed dictionary before each call on that sample.

:class:`MaskedSource` wraps any object with the gradient-source interface (``logits``, ``dense``,
``jvp``, ``vjp``, and ``central_differences`` for finite differences); it does not import them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SampleFeeds:
    """Rows of a model's other inputs, one per sample, switched into a runner's feed dictionary."""

    def __init__(self, feeds: dict[str, np.ndarray], rows: dict[str, np.ndarray], inputs: np.ndarray) -> None:
        self.feeds = feeds
        self.rows = rows
        self._index: dict[bytes, int] = {}
        for i in range(inputs.shape[0]):
            self._index.setdefault(np.ascontiguousarray(inputs[i]).tobytes(), i)

    def index_of(self, sample: np.ndarray) -> int | None:
        """The index of a sample of the data (None for any other array, e.g. a perturbed one)."""
        return self._index.get(np.ascontiguousarray(sample).tobytes())

    def use(self, index: int) -> None:
        """Put sample ``index``'s rows of the other inputs into the runner's feeds."""
        for name, values in self.rows.items():
            self.feeds[name] = values[index]


class MaskedSource:
    """A gradient source restricted to each sample's kept positions (module doc).

    ``keep`` is [N, d] booleans (None: every position kept); ``switch`` the per-sample feeds (None:
    the runner's feeds are the same for every sample). ``index`` binds the wrapper to one sample
    (see :meth:`at`); unbound, each call finds its sample among the data by value.
    """

    def __init__(
        self, source: Any, keep: np.ndarray | None, switch: SampleFeeds | None, index: int | None = None
    ) -> None:
        self._source = source
        self._keep = keep
        self._switch = switch
        self._bound = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    @property
    def wrapped(self) -> Any:
        """The unmasked source (for callers that need what only it has)."""
        return self._source

    def at(self, index: int) -> MaskedSource:
        """The same wrapper for sample ``index`` of the data (needs no lookup)."""
        return MaskedSource(self._source, self._keep, self._switch, index)

    def _select(self, sample: np.ndarray) -> np.ndarray | None:
        """Switch the feeds to ``sample``'s rows; its kept-position mask (None: all kept)."""
        index = self._bound
        if index is None and (self._switch is not None or self._keep is not None):
            index = self._switch.index_of(sample) if self._switch is not None else None
        if index is None:
            return None
        if self._switch is not None:
            self._switch.use(index)
        return None if self._keep is None else self._keep[index]

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits [N, K], each row run with its own sample's other inputs (a perturbed row keeps the current ones)."""
        if self._bound is not None:
            self._select(inputs[0])
            return self._source.logits(inputs)
        if self._switch is None:
            return self._source.logits(inputs)
        indices = [self._switch.index_of(row) for row in inputs]
        if any(index is None for index in indices):  # perturbed rows: the current feeds hold
            return self._source.logits(inputs)
        rows = []
        for row in inputs:
            self._select(row)
            rows.append(self._source.logits(row[None]))
        return np.concatenate(rows)

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """Jacobians [N, K, d] (float64) with the columns of masked positions set to zero."""
        pieces = []
        for row in inputs:
            keep = self._select(row)
            jacobian = np.array(self._source.dense(row[None]), dtype=np.float64)
            if keep is not None:
                jacobian[:, :, ~keep] = 0.0
            pieces.append(jacobian)
        return np.concatenate(pieces)

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """J v with the tangents' masked positions zeroed first: padding is never moved."""
        keep = self._select(sample)
        if keep is not None:
            tangents = np.where(keep[None, :], tangents.reshape(tangents.shape[0], -1), 0.0)
        return self._source.jvp(sample, tangents)

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """J^T u with the masked positions zeroed: padding has no sensitivity to report."""
        keep = self._select(sample)
        products = np.array(self._source.vjp(sample, cotangents), dtype=np.float64)
        if keep is not None:
            products[:, ~keep] = 0.0
        return products

    def central_differences(self, sample: np.ndarray, tangents: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        """The reference source's central differences along tangents with the masked positions zeroed."""
        keep = self._select(sample)
        if keep is not None:
            tangents = np.where(keep[None, :], tangents.reshape(tangents.shape[0], -1), 0.0)
        return self._source.central_differences(sample, tangents, *args, **kwargs)


def kept_positions(mask: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    """[N, d] booleans: position t of sample i is kept when ``mask[i, t]`` is nonzero.

    ``mask`` is [N, L] over the leading axis of a sample of shape [L, ...]; each position's
    trailing block (its H embedding values) shares the position's flag.
    """
    mask = np.asarray(mask) != 0
    block = int(np.prod(sample_shape[1:])) if len(sample_shape) > 1 else 1
    return np.repeat(mask, block, axis=1)


def token_sensitivity(eigenvector: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    """The norm of the unit top eigenvector's block per token position: [L], squares summing to 1."""
    vector = np.asarray(eigenvector, dtype=np.float64).reshape(sample_shape[0], -1)
    return np.linalg.norm(vector, axis=1)
