"""Pictures of the attack section: each attacked image beside its verified adversarial example.

Drawn for image-like inputs only (report/images.py decides what is an image). The input and its
adversarial example share one grey or colour scale, the input's own min-max range, so the change
is shown as the model saw it rather than re-stretched; the perturbation (example - input) and the
top Fisher eigenvector are drawn in the diverging palette, each on its own symmetric scale.
Pixel arrays travel beside the JSON document, never in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fimaudit.report.formatting import fmt
from fimaudit.report.images import (
    ImageLayout,
    data_uri,
    display_size,
    diverging,
    eigenvector_pixels,
    image_layout,
    magnitude,
    png_bytes,
    to_hwc,
)


@dataclass(frozen=True)
class AdversarialPicture:
    """One attacked sample: input, adversarial example, perturbation and eigenvector as data URIs."""

    index: int
    sample_uri: str
    adversarial_uri: str
    perturbation_uri: str
    eigenvector_uri: str | None
    width: int
    height: int
    caption: str


def _on_scale(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """[H, W, C] floats to uint8 on the fixed range [low, high] ([H, W] for one channel)."""
    scaled = np.zeros_like(image) if high <= low else np.clip((image - low) / (high - low), 0.0, 1.0)
    pixels = np.rint(scaled * 255).astype(np.uint8)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def _signed(values: np.ndarray, layout: ImageLayout) -> np.ndarray:
    """One channel: signed colours; several: the per-pixel length across channels."""
    image = to_hwc(values, layout)
    return diverging(image[:, :, 0]) if layout.channels == 1 else magnitude(np.linalg.norm(image, axis=2))


def adversarial_pictures(result: Any, count: int) -> tuple[list[AdversarialPicture], str]:
    """The ``count`` most sensitive samples with a verified example, drawn; or none and why."""
    inputs = result.data.inputs
    layout = image_layout(inputs.shape[1:])
    if layout is None:
        return [], f"not drawn: samples of shape {list(inputs.shape[1:])} are not images"
    attacked = [s for s in result.samples if s.attack is not None and s.attack.example is not None]
    if not attacked:
        return [], "not drawn: no sample has a verified adversarial example"
    chosen = sorted(attacked, key=lambda s: (-s.value, s.index))[:count]
    return [_picture(inputs, sample, layout) for sample in chosen], ""


def _picture(inputs: np.ndarray, sample: Any, layout: ImageLayout) -> AdversarialPicture:
    original = np.asarray(inputs[sample.index], dtype=np.float64)  # samples are the data's rows, in order
    example = np.asarray(sample.attack.example, dtype=np.float64).reshape(original.shape)
    low, high = float(original.min()), float(original.max())
    vector = sample.result.eigenvector
    width, height = display_size(layout)
    return AdversarialPicture(
        index=sample.index,
        sample_uri=data_uri(png_bytes(_on_scale(to_hwc(original, layout), low, high))),
        adversarial_uri=data_uri(png_bytes(_on_scale(to_hwc(example, layout), low, high))),
        perturbation_uri=data_uri(png_bytes(_signed(example - original, layout))),
        eigenvector_uri=None if vector is None or np.asarray(vector).size != original.size
        else data_uri(png_bytes(eigenvector_pixels(vector, layout))),
        width=width,
        height=height,
        caption=(f"sample {sample.index}: class {sample.attack.original_class} to {sample.attack.adversarial_class} "
                 f"at epsilon_min {fmt(sample.attack.epsilon_min)} (l{sample.attack.norm}), "
                 f"lambda_max {fmt(sample.value)}"),
    )

