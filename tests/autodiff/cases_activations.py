"""Op cases for fimaudit/autodiff/rules/activations.py (inputs sampled away from kinks)."""

from __future__ import annotations

import numpy as np

from tests.autodiff.opcases import OpCase, away_from_zero, single, weights_rng

_rng = weights_rng(2)


def _away_from(*kinks: float):
    """Sampler of values in [-4, 4] at least 0.1 from every kink."""

    def sample(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        values = rng.uniform(-4.0, 4.0, size=shape)
        for kink in kinks:
            close = np.abs(values - kink) < 0.1
            values[close] = kink + 0.1 * np.sign(values[close] - kink + 1e-9) + 0.05
        return values

    return sample


X4 = (2, 3, 2, 2)
CASES: list[OpCase] = [
    single("Relu", "Relu", X4, sample=away_from_zero),
    single("LeakyRelu/default", "LeakyRelu", X4, sample=away_from_zero),
    single("LeakyRelu/alpha", "LeakyRelu", X4, sample=away_from_zero, alpha=0.2),
    single("ThresholdedRelu", "ThresholdedRelu", X4, sample=_away_from(0.5), alpha=0.5),
    single("Elu", "Elu", X4, sample=away_from_zero, alpha=0.7),
    single("Selu", "Selu", X4, sample=away_from_zero),
    single("Celu", "Celu", X4, sample=away_from_zero, alpha=1.5, opset=12),
    single("PRelu/channel-slope", "PRelu", X4, ["x", "s"], {"s": _rng.uniform(0.1, 0.3, (3, 1, 1))}, sample=away_from_zero),
    single("PRelu/scalar-slope", "PRelu", X4, ["x", "s"], {"s": np.array([0.25])}, sample=away_from_zero),
    single("PRelu/slope-is-x", "PRelu", (2, 3), ["x", "x"], sample=away_from_zero),
    single("Clip/opset10-attributes", "Clip", X4, sample=_away_from(-1.0, 0.5), opset=10, min=-1.0, max=0.5),
    single("Clip/opset11-inputs", "Clip", X4, ["x", "lo", "hi"], {"lo": np.array(-1.0), "hi": np.array(0.5)}, sample=_away_from(-1.0, 0.5), opset=11),
    single("Clip/opset13-max-only", "Clip", X4, ["x", "", "hi"], {"hi": np.array(0.5)}, sample=_away_from(0.5), opset=13),
    single("Clip/no-bounds", "Clip", X4, opset=13),
    single("Sigmoid", "Sigmoid", X4),
    single("HardSigmoid", "HardSigmoid", X4, sample=_away_from(-2.5, 2.5)),
    single("HardSigmoid/alpha-beta", "HardSigmoid", X4, sample=_away_from(-1.0, 1.5), alpha=0.4, beta=0.4),
    single("HardSwish", "HardSwish", X4, sample=_away_from(-3.0, 3.0), opset=14),
    single("Tanh", "Tanh", X4),
    single("Softplus", "Softplus", X4),
    single("Softsign", "Softsign", X4, sample=away_from_zero),
    single("Erf", "Erf", X4),
    single("Gelu/exact", "Gelu", X4, opset=20),
    single("Gelu/tanh", "Gelu", X4, opset=20, approximate="tanh"),
    single("Softmax/opset13-last", "Softmax", X4, opset=13),
    single("Softmax/opset13-axis1", "Softmax", X4, opset=13, axis=1),
    single("Softmax/opset13-negative-axis", "Softmax", X4, opset=13, axis=-3),
    single("Softmax/opset11-coerced-axis1", "Softmax", X4, opset=11),
    single("Softmax/opset11-axis2", "Softmax", X4, opset=11, axis=2),
    single("Softmax/opset11-negative-axis", "Softmax", X4, opset=11, axis=-1),
    single("LogSoftmax/opset13", "LogSoftmax", X4, opset=13),
    single("LogSoftmax/opset13-axis0", "LogSoftmax", X4, opset=13, axis=0),
    single("LogSoftmax/opset11-coerced", "LogSoftmax", X4, opset=11),
    single("LogSoftmax/opset11-axis2", "LogSoftmax", X4, opset=11, axis=2),
]
