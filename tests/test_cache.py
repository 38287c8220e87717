"""The on-disk cache (fimaudit/cache.py) and the bounds' stored layer gains (bounds/stored.py).

What must hold: an entry comes back as written; a corrupted, truncated, foreign or tampered
entry is ignored (the value is derived again, never trusted); writers are atomic (concurrent
writers leave one complete entry and no temporary files); --no-cache reads and writes nothing;
and a bound computed from stored gains equals the one derived from the weights.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fimaudit.bounds.fisher_bound import FisherBounds
from fimaudit.bounds.stored import NAMESPACE
from fimaudit.cache import ResultCache, default_directory


def test_round_trip_and_disabled(tmp_path: Path) -> None:
    cache = ResultCache("t", tmp_path)
    key = cache.key("a", b"b")
    assert cache.get(key) is None
    cache.put(key, {"x": [1.5, "y"]})
    assert cache.get(key) == {"x": [1.5, "y"]}
    off = ResultCache("t", tmp_path, enabled=False)
    assert off.get(key) is None
    off.put(cache.key("other"), {"x": 1})
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [f"{key}.json"]


def test_keys_separate_their_parts(tmp_path: Path) -> None:
    cache = ResultCache("t", tmp_path)
    assert cache.key("ab", "c") != cache.key("a", "bc")


@pytest.mark.parametrize(
    "content",
    ["", "{", "not json", "[1, 2]", '{"format": 1, "key": "someone else", "value": {}}',
     '{"format": 999, "key": "KEY", "value": {}}', '{"format": 1, "key": "KEY", "value": [1]}', "\udcff"],
)
def test_corrupted_entries_are_ignored(tmp_path: Path, content: str) -> None:
    cache = ResultCache("t", tmp_path)
    key = cache.key("model")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / f"{key}.json").write_bytes(content.replace("KEY", key).encode("utf-8", "surrogateescape"))
    assert cache.get(key) is None
    cache.put(key, {"fresh": True})  # and the entry is rewritten whole
    assert cache.get(key) == {"fresh": True}


def test_unwritable_directory_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    cache = ResultCache("t", blocker)
    cache.put(cache.key("k"), {"x": 1})  # logged, not raised
    assert cache.get(cache.key("k")) is None


def test_concurrent_writers_leave_one_complete_entry(tmp_path: Path) -> None:
    cache = ResultCache("t", tmp_path)
    key = cache.key("shared")
    values = [{"writer": i, "payload": list(range(2000))} for i in range(8)]
    threads = [threading.Thread(target=cache.put, args=(key, value)) for value in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get(key) in values
    assert [p.name for p in (tmp_path / "t").iterdir()] == [f"{key}.json"]  # no temporary file left


def test_default_directory_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_directory() == tmp_path / "fimaudit"


def conv_classifier(seed: int = 0) -> onnx.ModelProto:
    """Conv(3x3, 6 channels) - Relu - Conv(3x3, stride 2) - Relu - Flatten - Gemm(10) on 3 x 8 x 8."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((8, 6, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((10, 8 * 4 * 4)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bounds_of(model: onnx.ModelProto, cache: ResultCache | None) -> tuple[FisherBounds, float, float]:
    bounds = FisherBounds(model, "x", "logits", (3, 8, 8), 10, cache=cache)
    value = bounds.global_bound().value
    sample = np.random.default_rng(1).standard_normal((3, 8, 8)).astype(np.float32)
    local = bounds.sample_bound(sample, np.linspace(-1, 1, 10)).value
    assert value is not None and local is not None
    return bounds, value, local


def test_stored_gains_give_the_same_bounds(tmp_path: Path) -> None:
    model = conv_classifier()
    cache = ResultCache(NAMESPACE, tmp_path)
    _, fresh, fresh_local = bounds_of(model, None)
    first, derived, derived_local = bounds_of(model, cache)
    second, cached, cached_local = bounds_of(model, cache)
    assert first.gains_from_cache is False and second.gains_from_cache is True
    assert (fresh, fresh_local) == (derived, derived_local) == (cached, cached_local)
    other = conv_classifier(seed=1)  # other weights: another key, derived afresh
    third, value, _ = bounds_of(other, cache)
    assert third.gains_from_cache is False and value != cached


def test_tampered_gains_are_derived_again(tmp_path: Path) -> None:
    model = conv_classifier()
    cache = ResultCache(NAMESPACE, tmp_path)
    _, derived, _ = bounds_of(model, cache)
    (entry,) = (tmp_path / NAMESPACE).iterdir()
    document = json.loads(entry.read_text())
    node = next(name for name, item in document["value"]["nodes"].items() if "gains" in item)
    document["value"]["nodes"][node]["gains"] = {"0": -1.0}  # no valid gain is negative
    entry.write_text(json.dumps(document))
    again, value, _ = bounds_of(model, cache)
    assert again.gains_from_cache is False and value == derived


def test_no_cache_reads_and_writes_nothing(tmp_path: Path) -> None:
    cache = ResultCache(NAMESPACE, tmp_path, enabled=False)
    bounds, _, _ = bounds_of(conv_classifier(), cache)
    assert bounds.global_bound().details["layer_gains"] == "off"
    assert not (tmp_path / NAMESPACE).exists()


@pytest.mark.parametrize("flag", ["--cache", "--no-cache"])
def test_cli_cache_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    """`fimaudit audit` keeps the layer gains under $XDG_CACHE_HOME/fimaudit, and --no-cache writes nothing."""
    from click.testing import CliRunner

    from fimaudit.cli import main
    from tests.conftest import SAMPLES

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    out = tmp_path / "a.json"
    result = CliRunner().invoke(main, ["audit", str(SAMPLES / "mlp.onnx"), "--samples", "2", "--method", "exact",
                                       "--json", str(out), flag])
    assert result.exit_code == 0, result.output
    stored = list((tmp_path / "xdg" / "fimaudit" / NAMESPACE).glob("*.json")) if flag == "--cache" else []
    assert len(stored) == (1 if flag == "--cache" else 0)
    assert not (tmp_path / "xdg" / "fimaudit").exists() or flag == "--cache"
    details = json.loads(out.read_text())["bound"]
    assert details.get("layer_gains", details.get("details", {}).get("layer_gains")) == (
        "derived" if flag == "--cache" else "off")
