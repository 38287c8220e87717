"""ONNX ``auto_pad`` arithmetic, shared by the gradient rules and the bound rules.

SAME_UPPER / SAME_LOWER pad so that out = ceil(in / stride); the odd pixel goes at the end for
SAME_UPPER and at the start for SAME_LOWER (the ONNX Conv/Pool specification).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def same_padding(
    spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], auto_pad: str
) -> tuple[list[int], list[int]]:
    """(pads at the start, pads at the end) per spatial axis for SAME_UPPER or SAME_LOWER."""
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end
