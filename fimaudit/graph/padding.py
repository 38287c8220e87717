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


def resolve_pads(
    auto_pad: str | None,
    pads: Sequence[int] | None,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """(begin, end) pads of a Conv or pooling window, ``auto_pad`` resolved against the input sizes.

    One reading for the bound and certificate rules, which must agree with ONNX Runtime on the
    window a node applies. Raises ``ValueError`` (the caller names the node) when strides,
    dilations or pads do not match the kernel's rank.
    """
    rank = len(kernel)
    if len(strides) != rank or len(dilations) != rank:
        raise ValueError("strides or dilations do not match the kernel's rank")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_padding(spatial, kernel, strides, dilations, auto_pad)
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    explicit = list(pads) if pads else [0] * (2 * rank)
    if len(explicit) != 2 * rank:
        raise ValueError("pads do not match the kernel's rank")
    return explicit[:rank], explicit[rank:]
