"""Shared fixtures: the bundled sample models and small models built in code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def sample_manifest() -> list[dict]:
    return json.loads((SAMPLES / "manifest.json").read_text())["models"]


@pytest.fixture(autouse=True, scope="session")
def _private_cache_directory(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's cache (fimaudit/cache.py): one fresh folder per run."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    return np.load(SAMPLES / "digits_test.npy")


def linear_classifier(weight: np.ndarray, bias: np.ndarray | None = None, opset: int = 17) -> onnx.ModelProto:
    """z = x W^T + b as a one-Gemm ONNX model with a dynamic batch (input 'x', output 'logits')."""
    classes, features = weight.shape
    initializers = [numpy_helper.from_array(weight.astype(np.float32), "W")]
    inputs = ["x", "W"]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        inputs.append("b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", inputs, ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fimaudit-tests")
    model.ir_version = 8
    return model


@pytest.fixture
def save_model(tmp_path: Path):
    """Write a ModelProto under tmp_path and return its path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, path)
        return path

    return save
