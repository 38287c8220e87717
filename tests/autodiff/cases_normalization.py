"""Op cases for fimaudit/autodiff/rules/normalization.py."""

from __future__ import annotations

from tests.autodiff.opcases import OpCase, single, weights_rng

_rng = weights_rng(4)
_ln = ["x", "scale", "bias"]

CASES: list[OpCase] = [
    single("LayerNormalization/last-axis", "LayerNormalization", (2, 3, 4), _ln, {"scale": _rng.uniform(0.5, 2, 4), "bias": _rng.normal(size=4)}),
    single("LayerNormalization/axis1-eps", "LayerNormalization", (2, 3, 4), _ln, {"scale": _rng.uniform(0.5, 2, (3, 4)), "bias": _rng.normal(size=(3, 4))}, axis=1, epsilon=0.1),
    single("LayerNormalization/negative-axis-no-bias", "LayerNormalization", (2, 3, 4), ["x", "scale"], {"scale": _rng.uniform(0.5, 2, (3, 4))}, axis=-2),
    single("LayerNormalization/2d-opset18", "LayerNormalization", (3, 5), _ln, {"scale": _rng.uniform(0.5, 2, 5), "bias": _rng.normal(size=5)}, opset=18),
    single("LayerNormalization/extra-outputs-unused", "LayerNormalization", (2, 4), _ln, {"scale": _rng.uniform(0.5, 2, 4), "bias": _rng.normal(size=4)}, num_outputs=3, opset=21),
]
