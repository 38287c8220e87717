"""Op cases for fimaudit/autodiff/rules/normalization.py."""

from __future__ import annotations

from tests.autodiff.opcases import OpCase, away_from_zero, single, weights_rng

_rng = weights_rng(4)
_ln = ["x", "scale", "bias"]

CASES: list[OpCase] = [
    single("LayerNormalization/last-axis", "LayerNormalization", (2, 3, 4), _ln, {"scale": _rng.uniform(0.5, 2, 4), "bias": _rng.normal(size=4)}),
    single("LayerNormalization/axis1-eps", "LayerNormalization", (2, 3, 4), _ln, {"scale": _rng.uniform(0.5, 2, (3, 4)), "bias": _rng.normal(size=(3, 4))}, axis=1, epsilon=0.1),
    single("LayerNormalization/negative-axis-no-bias", "LayerNormalization", (2, 3, 4), ["x", "scale"], {"scale": _rng.uniform(0.5, 2, (3, 4))}, axis=-2),
    single("LayerNormalization/2d-opset18", "LayerNormalization", (3, 5), _ln, {"scale": _rng.uniform(0.5, 2, 5), "bias": _rng.normal(size=5)}, opset=18),
    single("LayerNormalization/extra-outputs-unused", "LayerNormalization", (2, 4), _ln, {"scale": _rng.uniform(0.5, 2, 4), "bias": _rng.normal(size=4)}, num_outputs=3, opset=21),
]

_in = ["x", "scale", "bias"]
_gn = ["x", "scale", "bias"]

CASES += [
    # InstanceNormalization: how the dynamo exporter lowers GroupNorm (and plain instance norm).
    single("InstanceNormalization/2d", "InstanceNormalization", (2, 3, 4, 5), _in, {"scale": _rng.uniform(0.5, 2, 3), "bias": _rng.normal(size=3)}),
    single("InstanceNormalization/1d-eps-opset11", "InstanceNormalization", (2, 4, 6), _in, {"scale": _rng.uniform(0.5, 2, 4), "bias": _rng.normal(size=4)}, epsilon=0.1, opset=11),
    single("InstanceNormalization/symbolic-batch", "InstanceNormalization", (2, 3, 4, 4), _in, {"scale": _rng.uniform(0.5, 2, 3), "bias": _rng.normal(size=3)}, symbolic_batch=True),
    # GroupNormalization: opset 18 (scale/bias per group) and 21 (per channel).
    single("GroupNormalization/opset18-per-group", "GroupNormalization", (2, 6, 3, 3), _gn, {"scale": _rng.uniform(0.5, 2, 3), "bias": _rng.normal(size=3)}, num_groups=3, opset=18),
    single("GroupNormalization/opset21-per-channel", "GroupNormalization", (2, 6, 3, 3), _gn, {"scale": _rng.uniform(0.5, 2, 6), "bias": _rng.normal(size=6)}, num_groups=2, epsilon=0.01, stash_type=11, opset=21),
    single("GroupNormalization/opset21-one-group-1d", "GroupNormalization", (3, 4, 5), _gn, {"scale": _rng.uniform(0.5, 2, 4), "bias": _rng.normal(size=4)}, num_groups=1, stash_type=11, opset=21),
    # MeanVarianceNormalization: default axes [0, 2, 3] and per-sample axes.
    single("MeanVarianceNormalization/default-axes", "MeanVarianceNormalization", (2, 3, 4, 4)),
    single("MeanVarianceNormalization/last-axes-opset9", "MeanVarianceNormalization", (3, 4, 5), axes=[1, 2], opset=9),
    # LpNormalization: p = 2 and p = 1 (away from zeros: sign(x) is constant nearby).
    single("LpNormalization/p2-last-axis", "LpNormalization", (3, 5), p=2),
    single("LpNormalization/p2-axis1", "LpNormalization", (2, 4, 3), axis=1, p=2),
    single("LpNormalization/p1-away-from-zero", "LpNormalization", (2, 3, 4), axis=-1, p=1, sample=away_from_zero),
]
