"""lambda_max in raw-pixel units: the Fisher information through the preprocessing's affine map.

A preprocessed input is x = a * p + b element-wise (``PreprocessSpec.affine``: a = scale / std per
channel, after resize and crop), so the logits as a function of the pixels p have the Jacobian
J_p = J D with D = diag(a), and

    F_pixel = J_p^T C J_p = D^T F D,      lambda_max(F_pixel) = lambda_max(C^1/2 J D D^T J^T C^1/2).

With one scale for every element (a grey-scale spec, or equal std per channel) D = a I and
lambda_max(F_pixel) = a^2 lambda_max(F), derived without running anything (:func:`rescaled`).
With per-channel scales the estimator runs again on :class:`PixelSpaceJacobian`, which presents
the same model to it in pixel coordinates: the sample is p = (x - b) / a, products are J (D v) and
D (J^T u), logits of pixel points are the model's logits of a p + b. Every estimator (exact,
Lanczos, the black-box sketch) then measures F_pixel by the interface it already uses; the dense
Jacobian of the sample is computed once for both spaces (:class:`DenseMemo`).

"Pixel" means the values after resize and crop and before scaling: 0..255 for 8-bit images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fimaudit.data.preprocess import PreprocessSpec
from fimaudit.fisher.result import SpectralResult
from fimaudit.gradients.base import ForwardingJacobian, InputJacobian, expect_products, gram_product

SPACES = ("model", "pixel")


@dataclasses.dataclass(frozen=True)
class PixelMap:
    """x = scale * p + offset element-wise over one sample's shape (float64 arrays of that shape)."""

    scale: np.ndarray
    offset: np.ndarray

    @classmethod
    def from_spec(cls, spec: PreprocessSpec, sample_shape: tuple[int, ...]) -> PixelMap:
        """The spec's per-channel map broadcast over a sample in its layout."""
        a, b = spec.affine()
        axis_shape = (-1, 1, 1) if spec.layout == "NCHW" else (1, 1, -1)
        scale = np.broadcast_to(a.reshape(axis_shape), sample_shape).astype(np.float64)
        offset = np.broadcast_to(b.reshape(axis_shape), sample_shape).astype(np.float64)
        return cls(scale, offset)

    @property
    def uniform(self) -> float | None:
        """The one scale when every element has the same (then F_pixel = a^2 F), else None."""
        first = float(self.scale.reshape(-1)[0])
        return first if np.all(self.scale == first) else None

    def to_pixels(self, sample: np.ndarray) -> np.ndarray:
        """P = (x - b) / a in float64."""
        return (np.asarray(sample, dtype=np.float64) - self.offset) / self.scale


def rescaled(result: SpectralResult, scale: float) -> SpectralResult:
    """The model-space result for F_pixel = a^2 F: every eigenvalue times a^2, eigenvectors unchanged."""
    factor = scale * scale
    return dataclasses.replace(
        result,
        value=result.value * factor,
        interval=None if result.interval is None else (result.interval[0] * factor, result.interval[1] * factor),
        trace=None if result.trace is None else result.trace * factor,
        diagnostics={**result.diagnostics, "pixel_space": f"derived: a^2 x model space, a = {scale:.6g}"},
        model_evaluations=0,
        matvecs=0,
        seconds=0.0,
    )


class DenseMemo(ForwardingJacobian):
    """A source whose dense Jacobian of the last inputs is remembered (both spaces need it once)."""

    def __init__(self, source: InputJacobian) -> None:
        super().__init__(source)
        self._key: bytes | None = None
        self._value: np.ndarray | None = None

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """The wrapped source's Jacobians, computed once for the same inputs."""
        key = np.ascontiguousarray(inputs).tobytes() + str(inputs.shape).encode()
        if self._value is None or key != self._key:
            self._value, self._key = self.source.dense(inputs), key
        return self._value

    def gram_product(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray | None:
        """The wrapped source's (the memo does not change the Jacobian; see ``base.gram_product``)."""
        return gram_product(self.source, sample, cotangents)


class PixelSpaceJacobian(ForwardingJacobian):
    """One sample's model seen in pixel coordinates p (x = a p + b): J_p = J D (see the module doc)."""

    def __init__(self, source: InputJacobian, pixel_map: PixelMap, model_sample: np.ndarray) -> None:
        super().__init__(source)
        self.map = pixel_map
        self._a = pixel_map.scale.reshape(-1)
        self._model_sample = model_sample
        self.pixel_sample = pixel_map.to_pixels(model_sample)

    def _to_model(self, pixels: np.ndarray) -> np.ndarray:
        """Model inputs a p + b of pixel points; the audited sample maps back to its exact model-space values."""
        pixels = np.asarray(pixels, dtype=np.float64)
        model = (pixels * self.map.scale + self.map.offset).astype(self._model_sample.dtype)
        if pixels.shape == self.pixel_sample.shape:
            return self._model_sample if np.array_equal(pixels, self.pixel_sample) else model
        rows = pixels.reshape(-1, self.pixel_sample.size)
        same = np.all(rows == self.pixel_sample.reshape(-1), axis=1)
        if same.any():
            model.reshape(-1, self.pixel_sample.size)[same] = self._model_sample.reshape(-1)
        return model

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits of pixel points [N, ...]."""
        return self.source.logits(self._to_model(inputs))

    def dense(self, inputs: np.ndarray) -> np.ndarray:
        """J D [N, K, d]."""
        return self.source.dense(self._to_model(inputs)) * self._a

    def jvp(self, sample: np.ndarray, tangents: np.ndarray) -> np.ndarray:
        """J (D v)."""
        return self.source.jvp(self._to_model(sample), np.asarray(tangents, dtype=np.float64) * self._a)

    def vjp(self, sample: np.ndarray, cotangents: np.ndarray) -> np.ndarray:
        """D (J^T u)."""
        return np.asarray(self.source.vjp(self._to_model(sample), cotangents), dtype=np.float64) * self._a

    def expect_products(self, sample: np.ndarray) -> None:
        """The hint for the model-space sample the products will run at."""
        expect_products(self.source, self._to_model(sample))
