"""Global layer gains kept between runs (``fimaudit.cache``): the bound's costly part, stored once per model.

Why the gains and not the finished bound: the per-sample bounds walk the same graph and reuse
every global gain (``BoundEngine.local_gain`` never goes above it), so with the gains preloaded
both the global walk and the per-sample walks skip the spectral norms. The key holds all the
global walk depends on: the model's bytes (their SHA-256, or the file's when the caller has it),
the logits model's graph (the output cut fimaudit made), the input and logits names, the sample
shape, the number of classes and the input domain, fimaudit's version (``ResultCache.key``) and
the source of the bound rules (``rules_digest``).

An entry that does not decode into valid gains is ignored, as a corrupted file is: the gains
are then derived again and the entry rewritten.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from fimaudit.bounds.compose import BoundEngine, BoundProblem
from fimaudit.bounds.registry import LayerGain
from fimaudit.cache import ResultCache, digest

logger = logging.getLogger(__name__)

NAMESPACE = "bounds"


def bound_cache(enabled: bool = True) -> ResultCache:
    """The cache of layer gains in the user cache directory (``enabled=False``: --no-cache)."""
    return ResultCache(NAMESPACE, enabled=enabled)


def model_key(
    cache: ResultCache,
    model: onnx.ModelProto,
    input_name: str,
    logits_name: str,
    sample_shape: Sequence[int],
    num_classes: int,
    input_range: tuple[float, float] | None,
    file_digest: str | None = None,
) -> str:
    """The cache key of a model's global gains (see the module docstring).

    With ``file_digest`` (the SHA-256 of the file and its external data, already computed at
    load) only the graph's structure is hashed here; without it, every byte of the model.
    """
    if file_digest:
        structure = onnx.GraphProto()
        structure.node.extend(model.graph.node)
        structure.input.extend(model.graph.input)
        structure.output.extend(model.graph.output)
        content = digest(file_digest, structure.SerializeToString(deterministic=True))
    else:
        content = digest(model.SerializeToString(deterministic=True))
    domain = "unbounded" if input_range is None else f"{input_range[0]!r},{input_range[1]!r}"
    return cache.key("global layer gains", rules_digest(), content, input_name, logits_name,
                     repr(tuple(int(d) for d in sample_shape)), str(num_classes), domain)


@functools.lru_cache(maxsize=1)
def rules_digest() -> str:
    """SHA-256 of the bound code's source (fimaudit/bounds/**/*.py).

    Why beside the version: a rule changed in a working copy, with the version unchanged, must
    not be answered with the gains its previous code derived.
    """
    root = Path(__file__).resolve().parent
    files = sorted(root.rglob("*.py"))
    return digest(*[part for path in files for part in (str(path.relative_to(root)), path.read_bytes())])


def encode(gains: dict[str, LayerGain | BoundProblem]) -> dict[str, Any]:
    """JSON-ready gains (infinities as the strings 'inf', JSON having none)."""
    entries: dict[str, Any] = {}
    for node, gain in gains.items():
        if isinstance(gain, BoundProblem):
            entries[node] = {"problem": gain.to_dict()}
            continue
        entries[node] = {
            "gains": {str(index): value for index, value in gain.gains.items()},
            "method": gain.method, "combine": gain.combine, "magnitude": _number(gain.magnitude),
            "assumption": gain.assumption, "details": {k: _number(v) for k, v in gain.details.items()},
            "outputs": None if gain.outputs is None else list(gain.outputs),
        }
    return {"nodes": entries}


def decode(value: dict[str, Any]) -> dict[str, LayerGain | BoundProblem] | None:
    """The gains of an entry, or None when it is not a valid encoding (then it is ignored)."""
    try:
        gains: dict[str, LayerGain | BoundProblem] = {}
        for node, entry in value["nodes"].items():
            if "problem" in entry:
                problem = entry["problem"]
                gains[node] = BoundProblem(str(problem["node"]), str(problem["op"]), str(problem["reason"]),
                                           str(problem["kind"]))
                continue
            outputs = entry["outputs"]
            gains[node] = LayerGain(
                {int(index): _float(v) for index, v in entry["gains"].items()},
                str(entry["method"]), str(entry["combine"]), _float(entry["magnitude"]),
                None if entry["assumption"] is None else str(entry["assumption"]),
                {str(k): _float(v) for k, v in entry["details"].items()},
                None if outputs is None else tuple(int(i) for i in outputs),
            )
        return gains
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        logger.info("stored bound gains ignored (%s)", exc)
        return None


def load_or_derive(engine: BoundEngine, cache: ResultCache | None, key: str | None) -> bool:
    """Preload the engine's global gains from the cache; True when they came from it.

    Call ``store`` after the global walk when this returned False.
    """
    if cache is None or key is None:
        return False
    stored = cache.get(key)
    gains = None if stored is None else decode(stored)
    if gains is None:
        return False
    engine.preload(gains)
    return True


def store(engine: BoundEngine, cache: ResultCache | None, key: str | None) -> None:
    """Keep the engine's global gains under ``key``."""
    if cache is not None and key is not None:
        cache.put(key, encode(engine.global_gains()))


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else repr(float(value))


def _float(value: float | str) -> float:
    number = float(value)
    if math.isnan(number):
        raise ValueError("NaN in a stored gain")
    return number
