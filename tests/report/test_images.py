"""Inline pictures: the PNG encoder, image layouts, colours, and eigenvector orientation."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest

from fimaudit.report.images import (
    data_uri,
    diverging,
    display_size,
    draw_samples,
    image_layout,
    oriented,
    png_bytes,
    to_hwc,
)


def decode_png(data: bytes) -> np.ndarray:
    """A minimal decoder for the PNGs fimaudit writes (8-bit, filter 0): checks the format too."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        payload = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks.setdefault(kind, b"")
        chunks[kind] += payload
        position += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + width * channels)
    assert (raw[:, 0] == 0).all()
    pixels = raw[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


@pytest.mark.parametrize("shape", [(5, 7), (6, 4, 3)])
def test_png_round_trip(shape) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(decode_png(png_bytes(pixels)), pixels)
    uri = data_uri(png_bytes(pixels))
    assert uri.startswith("data:image/png;base64,")
    assert np.array_equal(decode_png(base64.b64decode(uri.split(",", 1)[1])), pixels)


def test_png_refuses_other_shapes() -> None:
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("shape, expected", [
    ((1, 8, 8), (8, 8, 1, True)),
    ((3, 32, 16), (32, 16, 3, True)),
    ((28, 28), (28, 28, 1, True)),
    ((32, 32, 3), (32, 32, 3, False)),
    ((64,), None),
    ((16, 2), None),
    ((2, 8, 8), None),
])
def test_image_layout(shape, expected) -> None:
    layout = image_layout(shape)
    assert (None if layout is None else (layout.height, layout.width, layout.channels, layout.channels_first)) == expected


def test_channel_first_samples_become_height_width_channels() -> None:
    layout = image_layout((3, 4, 5))
    sample = np.arange(60).reshape(3, 4, 5)
    image = to_hwc(sample, layout)
    assert image.shape == (4, 5, 3) and image[2, 3, 1] == sample[1, 2, 3]


def test_diverging_colours_and_orientation() -> None:
    colours = diverging(np.array([[-1.0, 0.0, 1.0]]))
    negative, zero, positive = colours[0]
    assert negative[2] > negative[0]  # blue
    assert positive[0] > positive[2]  # red
    assert zero.min() > 240  # white
    assert oriented(np.array([0.1, -0.9, 0.2]))[1] == pytest.approx(0.9)
    assert oriented(np.array([0.1, 0.9, -0.2]))[1] == pytest.approx(0.9)


def test_small_images_are_enlarged_and_big_ones_capped() -> None:
    assert display_size(image_layout((1, 8, 8))) == (112, 112)
    assert display_size(image_layout((3, 224, 448)))[0] == 160


def test_draw_samples_pictures_sample_and_eigenvector() -> None:
    rng = np.random.default_rng(1)
    inputs = rng.random((3, 1, 8, 8)).astype(np.float32)
    vectors = {0: rng.normal(size=64), 1: None, 2: rng.normal(size=10)}
    pictures, legend = draw_samples(inputs, vectors, [0, 1, 2])
    assert set(pictures) == {0, 1, 2} and "red (+)" in legend
    assert pictures[0].eigenvector_uri is not None and pictures[0].note == ""
    assert pictures[1].eigenvector_uri is None and "not computed" in pictures[1].note
    assert pictures[2].eigenvector_uri is None and "does not match" in pictures[2].note
    sample = decode_png(base64.b64decode(pictures[0].sample_uri.split(",", 1)[1]))
    expected = np.rint((inputs[0, 0] - inputs[0].min()) / (inputs[0].max() - inputs[0].min()) * 255)
    assert np.abs(sample.astype(int) - expected).max() <= 1


def test_non_images_are_not_drawn() -> None:
    pictures, note = draw_samples(np.zeros((2, 64), np.float32), {}, [0, 1])
    assert pictures == {} and "not images" in note


def test_colour_images_show_the_eigenvector_length_per_pixel() -> None:
    rng = np.random.default_rng(2)
    inputs = rng.random((1, 3, 6, 5)).astype(np.float32)
    vector = np.zeros((3, 6, 5))
    vector[:, 2, 3] = [3.0, -4.0, 0.0]  # length 5 at one pixel
    vector[0, 0, 0] = 1.0
    pictures, legend = draw_samples(inputs, {0: vector}, [0])
    assert "across channels" in legend
    sample = decode_png(base64.b64decode(pictures[0].sample_uri.split(",", 1)[1]))
    eigen = decode_png(base64.b64decode(pictures[0].eigenvector_uri.split(",", 1)[1]))
    assert sample.shape == (6, 5, 3) and eigen.shape == (6, 5, 3)
    assert tuple(eigen[2, 3]) == (178, 24, 43)  # the largest: full red
    assert eigen[1, 1].min() > 240  # zero: white
    assert eigen[0, 0][1] > eigen[2, 3][1]  # a fifth of the length: lighter
