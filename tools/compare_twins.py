"""A dynamo twin of the exporter corpus's ``torch_ts_resnet``, for ``fimaudit compare`` (issue 17).

The corpus holds a TorchScript export (``torch_ts_resnet``) and a dynamo export of a *different*
network (``torch_dynamo_mbv3``). Issue 17 asks that a TorchScript and a dynamo export of one CNN
be paired and agree, so this script rebuilds ``torch_ts_resnet``'s network exactly as
tools/corpus/export_pytorch.py does (same seed, same calibration) and exports it with
``dynamo=True`` (opset 18, batch fixed to 1) to tests/models/compare/torch_dynamo_resnet.onnx.
It checks that ONNX Runtime's logits of the two files agree on the corpus inputs before writing.

    /work/venvs/torch/bin/python tools/compare_twins.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "corpus"))
from export_pytorch import NUM_SAMPLES, ResidualCNN, calibrate, strip_stack_traces  # noqa: E402

OUT = ROOT / "tests" / "models" / "compare" / "torch_dynamo_resnet.onnx"
TWIN = ROOT / "tests" / "corpus" / "torch_ts_resnet.onnx"


def logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))])


def main() -> None:
    torch.set_num_threads(1)
    images = np.random.default_rng(16).standard_normal((NUM_SAMPLES, 3, 16, 16)).astype(np.float32)
    torch.manual_seed(0)
    model = calibrate(ResidualCNN().eval(), images, seed=0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.from_numpy(images[:1]),), str(OUT), dynamo=True, external_data=False,
                      opset_version=18, input_names=["input"], output_names=["logits"])
    strip_stack_traces(OUT)
    onnx.checker.check_model(str(OUT))
    ours, theirs = logits(OUT, images), logits(TWIN, images)
    error = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(f"{OUT.name}: {OUT.stat().st_size} bytes, logits vs {TWIN.name} relative max error {error:.1e}")
    if error > 1e-5:
        raise SystemExit(f"the dynamo export is not torch_ts_resnet's network (error {error:.1e})")


if __name__ == "__main__":
    main()
