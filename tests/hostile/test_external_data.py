"""External data outside the model's folder is refused without ever being opened.

The refusal message alone would not show that: a loader could read the file first and complain
afterwards. Linux inotify reports every open of the secret file, by any code in the process
(onnx opens external data from C++, out of reach of Python's audit hooks), and the test requires
that there is none. A control test shows the watch does see an allowed read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from fimaudit.errors import ModelError
from fimaudit.graph.loader import load_model
from tests.hostile import models
from tests.hostile.open_watch import OpenWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")

@pytest.fixture
def secret(tmp_path: Path):
    """A file outside the model's folder, watched for opens during the test."""
    path = tmp_path / "secret.bin"
    path.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    watch = OpenWatch(path)
    yield path, watch
    watch.close()


def _model_in_folder(tmp_path: Path, location: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(models.with_external_weight(location).SerializeToString())
    return path


def test_the_watch_sees_an_allowed_read(tmp_path: Path, secret) -> None:
    """Control: the watch does see the loader read external data that is inside the folder."""
    path, _ = secret
    folder = tmp_path / "model"
    folder.mkdir()
    inside = folder / "weights.bin"
    inside.write_bytes(path.read_bytes())
    watch = OpenWatch(inside)
    try:
        loaded = load_model(_model_in_folder(tmp_path, "weights.bin"))
        assert loaded.external_data_files == ["weights.bin"]
        assert watch.events() > 0, "inotify did not see the allowed read: the test would prove nothing"
    finally:
        watch.close()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "symlinked-folder"])
def test_outside_reference_is_refused_unread(tmp_path: Path, secret, kind: str) -> None:
    path, watch = secret
    folder = tmp_path / "model"
    folder.mkdir()
    if kind == "absolute":
        location = str(path)
    elif kind == "dotdot":
        location = "../secret.bin"
    elif kind == "symlink":
        os.symlink(path, folder / "weights.bin")
        location = "weights.bin"
    else:
        os.symlink(tmp_path, folder / "data")
        location = "data/secret.bin"
    model = _model_in_folder(tmp_path, location)
    watch.events()  # drain anything from setting up
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(model)
    assert watch.events() == 0, "the secret file was opened"
