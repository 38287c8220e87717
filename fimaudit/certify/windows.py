"""Convolution and pooling on stacks of tensors in numpy (float64), forward and transposed.

Why our own: the backward pass applies each layer's *transpose* to K Jacobian rows at once
(centre and radius), with |W| in place of W for the radius; no runtime offers conv with |W|
transposed on a batch without a framework. Everything is written as a loop over the kernel's
taps: tap (i, j) reads the strided slice x[:, :, i*d : ... : s, j*d : ... : s] of the padded
input, so forward is a sum of slices times weights, and the transpose adds the same slices back.
Only 2-D spatial layouts are handled (1-D is reshaped to 2-D by the rules); groups are supported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """The spatial layout of a 2-D window op: kernel, strides, dilations, pads (begin, end)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begin: tuple[int, int]
    end: tuple[int, int]

    def output_size(self, spatial: tuple[int, int]) -> tuple[int, int]:
        """Output height and width for an input of ``spatial`` size."""
        sizes = []
        for axis in range(2):
            span = (self.kernel[axis] - 1) * self.dilations[axis] + 1
            sizes.append((spatial[axis] + self.begin[axis] + self.end[axis] - span) // self.strides[axis] + 1)
        return sizes[0], sizes[1]

    def taps(self, spatial: tuple[int, int]) -> Iterator[tuple[int, int, tuple[slice, slice]]]:
        """(i, j, slices into the padded input) for every kernel tap."""
        out_h, out_w = self.output_size(spatial)
        (sh, sw), (dh, dw) = self.strides, self.dilations
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                rows = slice(i * dh, i * dh + (out_h - 1) * sh + 1, sh)
                cols = slice(j * dw, j * dw + (out_w - 1) * sw + 1, sw)
                yield i, j, (rows, cols)

    def pad(self, x: np.ndarray, value: float = 0.0) -> np.ndarray:
        """``x`` [..., H, W] padded by (begin, end) on the two spatial axes."""
        widths = [(0, 0)] * (x.ndim - 2) + [(self.begin[0], self.end[0]), (self.begin[1], self.end[1])]
        return np.pad(x, widths, constant_values=value)

    def crop(self, padded: np.ndarray, spatial: tuple[int, int]) -> np.ndarray:
        """The inverse of ``pad``: the real entries of a padded [..., H', W'] array."""
        return padded[..., self.begin[0] : self.begin[0] + spatial[0], self.begin[1] : self.begin[1] + spatial[1]]


def conv2d(x: np.ndarray, weight: np.ndarray, geometry: Geometry, groups: int) -> np.ndarray:
    """Cross-correlation of x [N, C, H, W] with weight [O, C/groups, kh, kw] (no bias)."""
    n, channels, height, width = x.shape
    out_channels = weight.shape[0]
    out_h, out_w = geometry.output_size((height, width))
    padded = geometry.pad(x)
    if groups == 1:
        return _dense_conv(padded, weight, geometry, (height, width), (out_h, out_w))
    per_in, per_out = channels // groups, out_channels // groups
    out = np.zeros((n, groups, per_out, out_h, out_w))
    grouped_w = weight.reshape(groups, per_out, per_in, *geometry.kernel)
    for i, j, (rows, cols) in geometry.taps((height, width)):
        piece = padded[:, :, rows, cols].reshape(n, groups, per_in, out_h, out_w)
        out += np.einsum("ngcxy,goc->ngoxy", piece, grouped_w[:, :, :, i, j], optimize=True)
    return out.reshape(n, out_channels, out_h, out_w)


#: Entries of one chunk of im2col columns (float64): 32 MiB, small enough to stay near the caches.
COLUMN_CHUNK = 1 << 22


def _dense_conv(padded: np.ndarray, weight: np.ndarray, geometry: Geometry, spatial: tuple[int, int],
                out_size: tuple[int, int]) -> np.ndarray:
    """An ungrouped convolution as one GEMM per chunk of the stack: [rows * OH * OW, C * taps] @ [C * taps, O].

    Why this layout: forward mode runs a convolution on thousands of stacked directions; a batched
    matmul per direction (O x C*taps times C*taps x OH*OW, OH*OW as small as 64) runs far below the
    BLAS peak, one tall GEMM near it. The chunk keeps the im2col columns bounded in memory.
    """
    n, channels = padded.shape[:2]
    out_h, out_w = out_size
    taps = list(geometry.taps(spatial))
    kernel = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1).T  # [taps * C, O], tap-major
    per_row = out_h * out_w * channels * len(taps)
    step = max(1, COLUMN_CHUNK // max(per_row, 1))
    out = np.empty((n, weight.shape[0], out_h, out_w))
    columns = np.empty((min(step, n), out_h, out_w, len(taps), channels))
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = columns[: stop - start]
        last = np.ascontiguousarray(padded[start:stop].transpose(0, 2, 3, 1))  # channels last: C contiguous
        for index, (_, _, (rows, cols)) in enumerate(taps):
            block[:, :, :, index, :] = last[:, rows, cols, :]
        product = block.reshape((stop - start) * out_h * out_w, -1) @ kernel
        out[start:stop] = product.reshape(stop - start, out_h, out_w, -1).transpose(0, 3, 1, 2)
    return out


def conv2d_transpose(g: np.ndarray, weight: np.ndarray, geometry: Geometry, groups: int,
                     spatial: tuple[int, int]) -> np.ndarray:
    """The adjoint of :func:`conv2d`: g [N, O, OH, OW] back to [N, C, H, W] (H, W = ``spatial``)."""
    n, out_channels, out_h, out_w = g.shape
    per_in = weight.shape[1]
    channels = per_in * groups
    padded_shape = (n, channels, spatial[0] + geometry.begin[0] + geometry.end[0],
                    spatial[1] + geometry.begin[1] + geometry.end[1])
    padded = np.zeros(padded_shape)
    if groups == 1:
        kernel = weight.reshape(out_channels, -1)
        columns = np.matmul(kernel.T, g.reshape(n, out_channels, out_h * out_w))
        columns = columns.reshape(n, channels, geometry.kernel[0], geometry.kernel[1], out_h, out_w)
        for i, j, (rows, cols) in geometry.taps(spatial):
            padded[:, :, rows, cols] += columns[:, :, i, j]
        return geometry.crop(padded, spatial)
    per_out = out_channels // groups
    grouped_w = weight.reshape(groups, per_out, per_in, *geometry.kernel)
    grouped_g = g.reshape(n, groups, per_out, out_h, out_w)
    for i, j, (rows, cols) in geometry.taps(spatial):
        back = np.einsum("ngoxy,goc->ngcxy", grouped_g, grouped_w[:, :, :, i, j], optimize=True)
        padded[:, :, rows, cols] += back.reshape(n, channels, out_h, out_w)
    return geometry.crop(padded, spatial)


def window_stack(x: np.ndarray, geometry: Geometry, fill: float) -> np.ndarray:
    """Every window's entries: [N, C, kh*kw, OH, OW] from x [N, C, H, W] padded with ``fill``."""
    padded = geometry.pad(x, fill)
    spatial = (x.shape[2], x.shape[3])
    return np.stack([padded[:, :, rows, cols] for _, _, (rows, cols) in geometry.taps(spatial)], axis=2)


def window_unstack(pieces: np.ndarray, geometry: Geometry, spatial: tuple[int, int]) -> np.ndarray:
    """The adjoint of :func:`window_stack`: [N, C, kh*kw, OH, OW] summed back into [N, C, H, W]."""
    n, channels = pieces.shape[:2]
    padded = np.zeros((n, channels, spatial[0] + geometry.begin[0] + geometry.end[0],
                       spatial[1] + geometry.begin[1] + geometry.end[1]))
    for tap, (_, _, (rows, cols)) in enumerate(geometry.taps(spatial)):
        padded[:, :, rows, cols] += pieces[:, :, tap]
    return geometry.crop(padded, spatial)
