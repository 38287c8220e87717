"""Pictures for image inputs: a sample beside its top Fisher eigenvector, as inline PNG data URIs.

The top eigenvector of F(x) is the input direction in which the prediction changes fastest; drawn
beside the sample it shows *where* the model is fragile. The PNGs are encoded here with numpy and
zlib (no imaging dependency) and embedded as ``data:`` URIs, so the report stays one file.

Pixel arrays never enter the JSON document: the report receives them separately, as ``Picture``s.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Display size: small inputs (8x8 digits) are enlarged with crisp pixels, big ones shown at most this wide.
_TARGET_PIXELS = 112
_MAX_DISPLAY = 160

# Diverging palette (ColorBrewer RdBu ends and a neutral middle): negative blue, zero white, positive red.
_NEGATIVE = np.array([33, 102, 172], dtype=np.float64)
_ZERO = np.array([247, 247, 247], dtype=np.float64)
_POSITIVE = np.array([178, 24, 43], dtype=np.float64)


@dataclass(frozen=True)
class ImageLayout:
    """How one sample's array is a picture: height, width, channels and where the channels are."""

    height: int
    width: int
    channels: int
    channels_first: bool


@dataclass
class Picture:
    """One most sensitive sample, drawn: the sample and (when known) its top eigenvector."""

    index: int
    sample_uri: str
    eigenvector_uri: str | None
    display_width: int
    display_height: int
    note: str


def image_layout(sample_shape: Sequence[int]) -> ImageLayout | None:
    """The picture layout of a sample shape, or None when the input is not image-like.

    [H, W] is grayscale; [C, H, W] (channel first, as PyTorch exports) or [H, W, C] with C in
    {1, 3} is an image when H and W are at least 4. Anything else (tabular [d], sequences) is not.
    """
    shape = [int(d) for d in sample_shape]
    if len(shape) == 2 and min(shape) >= 4:
        return ImageLayout(shape[0], shape[1], 1, True)
    if len(shape) == 3:
        if shape[0] in (1, 3) and min(shape[1:]) >= 4:
            return ImageLayout(shape[1], shape[2], shape[0], True)
        if shape[2] in (1, 3) and min(shape[:2]) >= 4:
            return ImageLayout(shape[0], shape[1], shape[2], False)
    return None


def to_hwc(flat: np.ndarray, layout: ImageLayout) -> np.ndarray:
    """A sample (any shape with H*W*C elements) as a float64 [H, W, C] array."""
    values = np.asarray(flat, dtype=np.float64).reshape(-1)
    if layout.channels_first:
        return values.reshape(layout.channels, layout.height, layout.width).transpose(1, 2, 0)
    return values.reshape(layout.height, layout.width, layout.channels)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 [H, W] (grayscale) or [H, W, 3] (RGB) pixels as a PNG file."""
    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    if array.ndim == 2:
        colour_type, channels = 0, 1
    elif array.ndim == 3 and array.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"PNG pixels must be [H, W] or [H, W, 3], got {array.shape}")
    height, width = array.shape[:2]
    rows = array.reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )


def data_uri(png: bytes) -> str:
    """The PNG as a data URI, so the HTML report is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def contrast_stretch(image: np.ndarray) -> np.ndarray:
    """[H, W, C] floats to uint8 with the image's own min-max range ([H, W] for one channel)."""
    low, high = float(image.min()), float(image.max())
    scaled = np.zeros_like(image) if high <= low else (image - low) / (high - low)
    pixels = np.rint(scaled * 255).astype(np.uint8)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def diverging(values: np.ndarray) -> np.ndarray:
    """[H, W] signed values to RGB: blue negative, white zero, red positive, symmetric scale."""
    peak = float(np.abs(values).max())
    t = values / peak if peak > 0 else np.zeros_like(values)
    t = t[..., None]
    colours = np.where(t >= 0, _ZERO + t * (_POSITIVE - _ZERO), _ZERO - t * (_NEGATIVE - _ZERO))
    return np.rint(colours).astype(np.uint8)


def magnitude(values: np.ndarray) -> np.ndarray:
    """[H, W] non-negative values to RGB: white zero to red at the largest."""
    peak = float(values.max())
    t = (values / peak if peak > 0 else np.zeros_like(values))[..., None]
    return np.rint(_ZERO + t * (_POSITIVE - _ZERO)).astype(np.uint8)


def oriented(vector: np.ndarray) -> np.ndarray:
    """An eigenvector's sign is arbitrary: fix it so that its largest component is positive."""
    flat = np.asarray(vector, dtype=np.float64).reshape(-1)
    return -flat if flat[np.argmax(np.abs(flat))] < 0 else flat


def eigenvector_pixels(vector: np.ndarray, layout: ImageLayout) -> np.ndarray:
    """One channel: signed colours. Several: the per-pixel length across channels."""
    image = to_hwc(oriented(vector), layout)
    if layout.channels == 1:
        return diverging(image[:, :, 0])
    return magnitude(np.linalg.norm(image, axis=2))


def display_size(layout: ImageLayout) -> tuple[int, int]:
    """On-page size: enlarge small images by a whole factor, cap large ones."""
    scale = max(1, _TARGET_PIXELS // max(layout.height, layout.width))
    width, height = layout.width * scale, layout.height * scale
    if width > _MAX_DISPLAY:
        height, width = round(height * _MAX_DISPLAY / width), _MAX_DISPLAY
    return width, height


def draw_samples(
    inputs: np.ndarray, eigenvectors: dict[int, Any], indices: Sequence[int]
) -> tuple[dict[int, Picture], str]:
    """Pictures of ``indices`` (rows of ``inputs``) and a note on how they are drawn.

    Returns no pictures, and a note saying why, when the input is not image-like.
    """
    layout = image_layout(inputs.shape[1:])
    if layout is None:
        return {}, f"not drawn: samples of shape {list(inputs.shape[1:])} are not images"
    width, height = display_size(layout)
    pictures: dict[int, Picture] = {}
    for index in indices:
        sample = to_hwc(inputs[index], layout)
        vector = eigenvectors.get(index)
        if vector is not None and np.asarray(vector).size == inputs[index].size:
            eigen_uri = data_uri(png_bytes(eigenvector_pixels(vector, layout)))
            note = ""
        else:
            eigen_uri = None
            note = (
                "eigenvector not computed by this method"
                if vector is None
                else "eigenvector does not match the input size"
            )
        pictures[index] = Picture(index, data_uri(png_bytes(contrast_stretch(sample))), eigen_uri, width, height, note)
    if layout.channels == 1:
        legend = ("samples in grey with their own min-max contrast; eigenvectors in red (+) and blue (-) "
                  "on a symmetric scale, sign fixed so the largest component is positive")
    else:
        legend = ("samples in colour with their own min-max contrast; eigenvectors as the length of the "
                  "direction across channels at each pixel (white 0, red largest)")
    return pictures, legend


def audit_pictures(result: Any, indices: Sequence[int]) -> tuple[dict[int, Picture], str]:
    """Pictures for an AuditResult: its inputs and the eigenvectors its estimator kept."""
    eigenvectors = {audit.index: audit.result.eigenvector for audit in result.samples}
    return draw_samples(result.data.inputs, eigenvectors, indices)
