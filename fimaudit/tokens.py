"""Token data for ``--wrt embeddings``: ids in, the model's real embedding point out.

Data is an ``.npz`` of ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (one row per sample,
integers; any other integer input of the model by its name). Each sample's embedding sum is
computed by running the original graph cut at the embedding tensor once (ONNX Runtime), so J is
evaluated where the model really is. ``attention_mask`` marks the positions that are text (1) and
padding (0); a missing mask means no padding, missing ``token_type_ids`` are zeros (the
Hugging Face defaults). Per-token sensitivity, the norm of the top Fisher eigenvector's block per
position, is recorded per sample and shown beside the decoded tokens when a vocabulary is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fimaudit.data import AuditData, read_named_arrays
from fimaudit.embedding_mask import MaskedSource, SampleFeeds, kept_positions, token_sensitivity
from fimaudit.errors import InputError
from fimaudit.graph.embeddings import EmbeddingSite, embedding_model
from fimaudit.graph.tensors import graph_inputs
from fimaudit.resources import MemoryBudget
from fimaudit.runtime import create_session, run_session

logger = logging.getLogger(__name__)

MASK_NAMES = ("attention_mask",)
DEFAULTS_ZERO = ("token_type_ids",)
# Vocabulary files larger than this are refused (a BERT vocab.txt is ~230 kB).
MAX_VOCAB_BYTES = 64 << 20


@dataclass
class TokenData:
    """The integer side of an embedding-space audit, and what it found per token."""

    site: EmbeddingSite
    ids: np.ndarray
    mask: np.ndarray
    rows: dict[str, np.ndarray]
    vocabulary: list[str] | None = None
    sensitivity: dict[int, list[float]] = field(default_factory=dict)

    def wrap(self, source: Any, feeds: dict[str, np.ndarray], inputs: np.ndarray) -> MaskedSource:
        """The gradient source restricted to real tokens, with each sample's integer feeds."""
        keep = kept_positions(self.mask, tuple(inputs.shape[1:])) if self.site.kind == "embeddings" else None
        switch = SampleFeeds(feeds, self.rows, inputs) if self.rows else None
        return MaskedSource(source, keep, switch)

    def record(self, index: int, eigenvector: Any, sample_shape: tuple[int, ...]) -> None:
        """Keep per-token sensitivity (norm of the eigenvector's block per position) of sample ``index``."""
        if eigenvector is not None:
            self.sensitivity[index] = [float(v) for v in token_sensitivity(eigenvector, sample_shape)]

    def tokens(self, index: int) -> list[str] | None:
        """Sample ``index``'s tokens decoded with the vocabulary (None without one)."""
        if self.vocabulary is None or self.ids.ndim != 2:
            return None
        size = len(self.vocabulary)
        return [self.vocabulary[int(i)] if 0 <= int(i) < size else f"[id {int(i)}]" for i in self.ids[index]]


def read_vocabulary(path: str | None) -> list[str] | None:
    """A BERT-style vocab.txt: one token per line, line number = id."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise InputError(f"vocabulary file not found: {file}")
    if file.stat().st_size > MAX_VOCAB_BYTES:
        raise InputError(f"{file.name} is larger than {MAX_VOCAB_BYTES >> 20} MiB; not a vocabulary file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{file.name} is not UTF-8 text (a vocab.txt has one token per line)") from exc
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _integer_names(model: onnx.ModelProto) -> list[str]:
    return [value.name for value in graph_inputs(model.graph)]


def load_token_data(
    path: str | None,
    original: onnx.ModelProto,
    rewritten: onnx.ModelProto,
    site: EmbeddingSite,
    samples: int | None,
    budget: MemoryBudget,
    providers: list[str] | None = None,
    timeout: float | None = None,
    vocabulary: list[str] | None = None,
) -> AuditData:
    """Read the token arrays, compute each sample's embedding point, and bundle both (module doc)."""
    if path is None:
        raise InputError(
            f"--wrt embeddings needs --data: an .npz of {site.ids_input!r} (token ids, one row per sample)"
            " with 'attention_mask' and 'token_type_ids' when the model takes them"
        )
    cut = embedding_model(original, site)
    rewritten_inputs = [name for name in _integer_names(rewritten) if name != "fimaudit_embeddings"]
    wanted = list(dict.fromkeys([site.ids_input, *_integer_names(cut), *rewritten_inputs]))
    arrays, source = read_named_arrays(path, wanted, samples, budget)
    if site.ids_input not in arrays:
        raise InputError(
            f"{source} holds no array {site.ids_input!r} (the model's token ids); it holds {sorted(arrays)}"
        )
    ids = arrays[site.ids_input]
    if ids.dtype.kind not in "iu":
        raise InputError(f"{source}[{site.ids_input!r}] has dtype {ids.dtype}; token ids are integers")
    count = ids.shape[0]
    for name in wanted:
        if name in arrays:
            continue
        if name in MASK_NAMES:
            logger.info("%s has no %r: every position is text", source, name)
            arrays[name] = np.ones_like(ids)
        elif name in DEFAULTS_ZERO:
            logger.info("%s has no %r: zeros", source, name)
            arrays[name] = np.zeros_like(ids)
        else:
            raise InputError(f"{source} holds no array {name!r}, an input of the model; it holds {sorted(arrays)}")
    for name, values in arrays.items():
        if values.dtype.kind not in "iub":
            raise InputError(f"{source}[{name!r}] has dtype {values.dtype}; the model's integer inputs need integers")
        if values.shape[0] != count:
            raise InputError(f"{source}[{name!r}] has {values.shape[0]} rows, {site.ids_input!r} has {count}")
    mask = next((arrays[name] for name in MASK_NAMES if name in arrays), np.ones_like(ids))
    if mask.shape != ids.shape:
        raise InputError(f"{source}: attention_mask has shape {list(mask.shape)}, token ids {list(ids.shape)}")
    if not np.isin(mask, (0, 1)).all():
        raise InputError(f"{source}: attention_mask holds values other than 0 and 1")
    embeddings = compute_embeddings(cut, arrays, providers, timeout)
    if embeddings.shape[0] != count or (site.kind == "embeddings" and embeddings.shape[1] != ids.shape[1]):
        raise InputError(f"the embedding lookup gave shape {list(embeddings.shape)} for token ids {list(ids.shape)}")
    if not np.isfinite(embeddings).all():
        raise InputError(
            "the embedding lookup gave NaN or Inf values (check the token ids against the vocabulary size)"
        )
    dtypes = {value.name: value.type.tensor_type.elem_type for value in graph_inputs(rewritten.graph)}
    rows = {
        name: arrays[name].astype(onnx.helper.tensor_dtype_to_np_dtype(dtypes[name]))
        for name in rewritten_inputs
    }
    feeds = {name: values[0] for name, values in rows.items()}
    tokens = TokenData(site, ids, mask, rows, vocabulary)
    data = AuditData(inputs=np.ascontiguousarray(embeddings), source=source, synthetic=False, extra_feeds=feeds)
    data.tokens = tokens
    return data


def compute_embeddings(
    cut: onnx.ModelProto, arrays: dict[str, np.ndarray], providers: list[str] | None, timeout: float | None
) -> np.ndarray:
    """Run the embedding subgraph on every sample (one ONNX Runtime session, batches of 64)."""
    session, _ = create_session(cut, providers)
    types = {value.name: value.type for value in session.get_inputs()}
    numpy_of = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    count = next(iter(arrays.values())).shape[0]
    pieces = []
    for start in range(0, count, 64):
        feeds: dict[str, np.ndarray] = {
            name: arrays[name][start : start + 64].astype(numpy_of.get(types[name], np.int64))
            for name in types
        }
        (values,) = run_session(session, None, feeds, timeout)
        pieces.append(values)
    return np.concatenate(pieces)


def token_document(tokens: TokenData | None, document: dict[str, Any]) -> None:
    """Add per-token sensitivity (and decoded tokens) to each sample of a built JSON document."""
    if tokens is None:
        return
    document["data"]["wrt"] = "embeddings" if tokens.site.kind == "embeddings" else "one_hot"
    document["data"]["differentiated"] = tokens.site.describe()
    for entry in document["samples"]:
        index = entry["index"]
        entry["token_sensitivity"] = tokens.sensitivity.get(index)
        entry["attention_mask"] = [int(v) for v in tokens.mask[index].reshape(-1)]
        entry["token_ids"] = [int(v) for v in tokens.ids[index].reshape(-1)]
        entry["tokens"] = tokens.tokens(index)


def at_embeddings(loaded: Any, output_name: str | None) -> tuple[Any, Any, EmbeddingSite]:
    """The model rewritten so that its embedding tensor is the input, its selection, and the site."""
    import dataclasses

    from fimaudit.graph.embeddings import EMBEDDINGS, require_site, rewrite_at
    from fimaudit.graph.selection import select_input_output

    site = require_site(loaded.proto)
    rewritten = rewrite_at(loaded.proto, site)
    moved = dataclasses.replace(loaded, proto=rewritten)
    selection = select_input_output(moved, EMBEDDINGS, output_name)
    logger.info("differentiating with respect to %s", site.describe())
    return moved, selection, site
