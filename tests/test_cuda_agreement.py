"""CPU and CUDA give the same Jacobians and lambda_max (skipped where onnxruntime has no CUDA).

Why: the CUDA provider is chosen automatically when onnxruntime-gpu finds a GPU
(``runtime.available_providers``), so an audit's numbers must not depend on where it ran. On
Ampere and newer GPUs the CUDA provider computes float32 convolutions in TF32 unless told not
to (``runtime.provider_settings``); with TF32 these Jacobians differ by ~1e-3, so this test
fails without that setting. The model has a strided conv, a stride-1 conv (the Conv adjoint)
and BatchNormalization, the paths the gradient rules differ on.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from fimaudit.fisher.exact import exact_lambda_max
from fimaudit.gradients.graph import graph_source
from fimaudit.graph.selection import LOGITS
from fimaudit.runtime import ModelRunner
from tests.test_cache import conv_classifier

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="onnxruntime has no CUDA provider here"
)


def jacobians(providers: list[str], inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    model = conv_classifier()
    model.graph.output[0].name = LOGITS
    model.graph.node[-1].output[0] = LOGITS
    runner = ModelRunner(model, "x", [LOGITS], fixed_batch=1, providers=providers)
    source = graph_source(runner, inputs.shape[1:], 10)
    return source.dense(inputs), source.logits(inputs), runner.provider


def test_cpu_and_cuda_agree() -> None:
    # Scaled so that the logits spread by ~5 (unsaturated softmax: lambda_max ~1e4, not 1e-63).
    inputs = 0.01 * np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    cpu, cpu_logits, cpu_provider = jacobians(["CPUExecutionProvider"], inputs)
    gpu, gpu_logits, gpu_provider = jacobians(["CUDAExecutionProvider", "CPUExecutionProvider"], inputs)
    assert (cpu_provider, gpu_provider) == ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert np.abs(gpu - cpu).max() <= 1e-5 * np.abs(cpu).max()
    for index in range(inputs.shape[0]):
        on_cpu = exact_lambda_max(cpu[index], cpu_logits[index], with_eigenvector=False).value
        on_gpu = exact_lambda_max(gpu[index], gpu_logits[index], with_eigenvector=False).value
        assert on_gpu == pytest.approx(on_cpu, rel=1e-5)
