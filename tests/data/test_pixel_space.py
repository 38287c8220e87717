"""lambda_max in pixel units equals the analytic rescaling through the preprocessing's affine map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fimaudit.audit import AuditConfig, run_audit
from fimaudit.fisher.covariance import softmax_covariance
from tests.data.helpers import image_linear_model, write_folder

# Per-channel std: D = diag(scale / std_c) is not a multiple of the identity.
RGB_SPEC = "channels=RGB,scale=1/255,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW"
SCALE = np.array([1 / 255 / 0.229, 1 / 255 / 0.224, 1 / 255 / 0.225])


@pytest.fixture(scope="module")
def rgb_case(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    root = tmp_path_factory.mktemp("rgb")
    weight = np.random.default_rng(3).normal(size=(5, 3 * 4 * 4)).astype(np.float32)
    (root / "model.onnx").write_bytes(image_linear_model(weight, (3, 4, 4)).SerializeToString())
    pixels = np.random.default_rng(4).integers(0, 256, size=(4, 4, 4, 3), dtype=np.uint8)
    write_folder(root / "images", pixels)
    return root / "model.onnx", root / "images", weight.astype(np.float64)


def _exact_pixel_lambda(weight: np.ndarray, logits: np.ndarray) -> float:
    """lambda_max(D^T J^T C J D) with J = W: the d x d pixel-space Fisher matrix, dense, float64."""
    d = np.repeat(SCALE, 16)  # NCHW: channel c covers 16 consecutive elements
    jd = weight * d
    return float(np.linalg.eigvalsh(jd.T @ softmax_covariance(logits) @ jd).max())


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_pixel_space_equals_analytic_rescaling_per_channel(rgb_case, method: str) -> None:
    model, images, weight = rgb_case
    for space in ("model", "pixel"):
        config = AuditConfig(
            model_path=str(model),
            data_path=str(images),
            preprocess=RGB_SPEC,
            method=method,
            bounds=False,
            space=space,
            gradients="graph",
        )
        result = run_audit(config)
        for sample in result.samples:
            want = _exact_pixel_lambda(weight, np.asarray(sample.logits))
            assert sample.spaces["pixel"].value == pytest.approx(want, rel=1e-5)
            assert sample.value == pytest.approx(sample.spaces[space].value, rel=0)
            if method == "exact":  # the pixel run reuses the sample's dense Jacobian: no model run
                assert sample.spaces["pixel"].model_evaluations == 0 < sample.spaces["model"].model_evaluations
            # ... and it is not the model-space value times one scalar: D really is per channel.
            ratio = sample.spaces["pixel"].value / sample.spaces["model"].value
            assert SCALE.min() ** 2 * 0.999 <= ratio <= SCALE.max() ** 2 * 1.001


def test_uniform_scale_is_a_squared_factor(tmp_path: Path) -> None:
    from tests.conftest import SAMPLES

    write_folder(tmp_path / "images", np.random.default_rng(0).integers(0, 256, size=(3, 8, 8), dtype=np.uint8))
    config = AuditConfig(
        model_path=str(SAMPLES / "mlp.onnx"),
        data_path=str(tmp_path / "images"),
        preprocess="channels=L,scale=1/255,mean=0.5,std=0.25",
        bounds=False,
        space="pixel",
    )
    result = run_audit(config)
    a = 1 / 255 / 0.25
    for sample in result.samples:
        assert sample.value == pytest.approx(a * a * sample.spaces["model"].value, rel=1e-12)
        assert sample.space == "pixel" and sample.to_dict()["space"] == "pixel"


def test_pixel_space_needs_a_preprocessing_spec() -> None:
    from fimaudit.errors import InputError
    from tests.conftest import SAMPLES

    config = AuditConfig(
        model_path=str(SAMPLES / "mlp.onnx"),
        data_path=str(SAMPLES / "digits_test.npy"),
        samples=2,
        bounds=False,
        space="pixel",
    )
    with pytest.raises(InputError, match="--space pixel needs image data with a preprocessing spec"):
        run_audit(config)
