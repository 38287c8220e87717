"""Small image data and models for the data-layer tests: PNG folders built from known pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image


def image_linear_model(weight: np.ndarray, sample_shape: tuple[int, ...]) -> onnx.ModelProto:
    """z = flatten(x) W^T for x of ``sample_shape`` (a dynamic batch): an image classifier with a known Jacobian W."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W"], ["logits"], transB=1),
        ],
        "image_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *sample_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weight.shape[0]])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_folder(root: Path, pixels: np.ndarray, labels: list[int] | None = None) -> list[str]:
    """PNG files of ``pixels`` (uint8 [N, H, W] grey or [N, H, W, 3] RGB), in class sub-folders when labelled.

    Names sort in sample order, so the folder's sample i is ``pixels[i]``.
    """
    names = []
    for i, image in enumerate(pixels):
        folder = root / str(labels[i]) if labels is not None else root
        folder.mkdir(parents=True, exist_ok=True)
        name = f"img{i:03d}.png"
        Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB").save(folder / name)
        names.append(str((folder / name).relative_to(root)))
    return names
