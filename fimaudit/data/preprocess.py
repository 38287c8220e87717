"""The preprocessing that turns an image file into a model input: a declared, recorded spec.

A model is audited on the inputs it was trained with, and for image models those are not the
pixels but pixels resized, cropped, scaled and normalised. fimaudit never guesses that pipeline:
it is declared (``--preprocess``, a JSON file, or the model's own ``metadata_props``), applied in
one documented order, and recorded in the JSON document next to the numbers it produced.

The order is torchvision's ``Resize -> CenterCrop -> ToTensor -> Normalize``:

1. ``channels``: RGB, BGR or L (grey), after decoding;
2. ``resize=S``: the shorter side to S (aspect kept), or ``resize=HxW``: exactly H x W (bilinear);
3. ``center_crop=C`` or ``CxC``;
4. ``scale`` (``1/255`` is accepted), then ``(x - mean) / std`` per channel, in float64;
5. ``layout``: NCHW (channels first) or NHWC.

Steps 4 is affine per channel, ``model = a_c * pixel + b_c`` with ``a_c = scale / std_c``: that
is what :mod:`fimaudit.data.pixel_space` uses to report lambda_max in raw pixel units.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fimaudit.errors import InputError

#: Keys of the model's ``metadata_props`` that may hold a spec (text or JSON), in order of preference.
METADATA_KEYS = ("fimaudit.preprocess", "preprocess")
LAYOUTS = ("NCHW", "NHWC")
CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}
_KEYS = ("resize", "center_crop", "scale", "mean", "std", "layout", "channels")
# A spec larger than this is not a spec (a JSON file or a metadata value).
_MAX_SPEC_BYTES = 64 << 10
# No real preprocessing resizes beyond this; a larger size would allocate huge images.
_MAX_SIDE = 16384


@dataclass(frozen=True)
class PreprocessSpec:
    """One preprocessing pipeline (see the module doc for the order) and where it was declared."""

    resize: tuple[int, ...] | None = None  # (S,): shorter side; (H, W): exact size
    center_crop: tuple[int, int] | None = None
    scale: float = 1.0
    scale_text: str = "1"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    channels: str = "RGB"
    source: str = field(default="--preprocess", compare=False)

    @property
    def num_channels(self) -> int:
        """Channels of the preprocessed tensor (3 for RGB/BGR, 1 for L)."""
        return CHANNELS[self.channels]

    def per_channel(self, values: tuple[float, ...]) -> np.ndarray:
        """``mean`` or ``std`` as one float64 value per channel."""
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (self.num_channels,)).copy()

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per channel with model input = a * pixel + b (float64)."""
        std = self.per_channel(self.std)
        return self.scale / std, -self.per_channel(self.mean) / std

    def to_dict(self) -> dict[str, Any]:
        """The spec as the JSON document records it, with the pixel-to-model affine map."""
        a, b = self.affine()
        return {
            "source": self.source,
            "channels": self.channels,
            "resize": None if self.resize is None else list(self.resize),
            "center_crop": None if self.center_crop is None else list(self.center_crop),
            "scale": self.scale,
            "scale_text": self.scale_text,
            "mean": list(self.per_channel(self.mean)),
            "std": list(self.per_channel(self.std)),
            "layout": self.layout,
            "pixel_to_model": {"scale": [float(v) for v in a], "offset": [float(v) for v in b]},
        }


def resized_size(resize: tuple[int, ...], width: int, height: int) -> tuple[int, int]:
    """(height, width) after ``resize``: the shorter side to S (torchvision's rounding), or exactly H x W."""
    if len(resize) == 2:
        return resize[0], resize[1]
    side = resize[0]
    if width <= height:
        return int(side * height / width), side
    return side, int(side * width / height)


def _number(text: str, key: str, where: str) -> float:
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{where}: {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {key}={text!r} is not a finite number")
    return value


def _size(values: Sequence[Any], key: str, where: str) -> tuple[int, ...]:
    parts: list[str] = []
    for value in values:
        parts.extend(str(value).lower().split("x"))
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"{where}: {key} must be S or HxW in pixels, got {','.join(map(str, values))!r}") from None
    if len(sizes) not in (1, 2) or not all(0 < s <= _MAX_SIDE for s in sizes):
        raise InputError(f"{where}: {key} must be S or HxW with sides 1..{_MAX_SIDE}, got {sizes}")
    return sizes


def spec_from_mapping(values: Mapping[str, Any], source: str) -> PreprocessSpec:
    """A spec from key -> value(s) (parsed text or JSON), every key and value checked."""
    unknown = sorted(set(values) - set(_KEYS))
    if unknown:
        raise InputError(f"{source}: unknown preprocessing key(s) {unknown}; known: {', '.join(_KEYS)}")

    def many(key: str) -> list[Any]:
        value = values[key]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    fields: dict[str, Any] = {"source": source}
    if "channels" in values:
        channels = str(values["channels"]).upper()
        if channels not in CHANNELS:
            raise InputError(f"{source}: channels={values['channels']!r}; choose RGB, BGR or L")
        fields["channels"] = channels
    if "layout" in values:
        layout = str(values["layout"]).upper()
        if layout not in LAYOUTS:
            raise InputError(f"{source}: layout={values['layout']!r}; choose NCHW or NHWC")
        fields["layout"] = layout
    if "resize" in values:
        fields["resize"] = _size(many("resize"), "resize", source)
    if "center_crop" in values:
        crop = _size(many("center_crop"), "center_crop", source)
        fields["center_crop"] = (crop[0], crop[-1])
    if "scale" in values:
        text = str(values["scale"]).strip()
        fields["scale"], fields["scale_text"] = _number(text, "scale", source), text
        if fields["scale"] == 0:
            raise InputError(f"{source}: scale must not be 0")
    channel_count = CHANNELS[fields.get("channels", "RGB")]
    for key in ("mean", "std"):
        if key in values:
            numbers = tuple(_number(str(v), key, source) for v in many(key))
            if len(numbers) not in (1, channel_count):
                raise InputError(
                    f"{source}: {key} has {len(numbers)} values; give 1 or one per channel ({channel_count})"
                )
            if key == "std" and any(v == 0 for v in numbers):
                raise InputError(f"{source}: std must not be 0")
            fields[key] = numbers
    return PreprocessSpec(**fields)


def parse_spec_text(text: str, source: str = "--preprocess") -> PreprocessSpec:
    """``key=value,...`` where a value may continue over commas (``mean=0.485,0.456,0.406``)."""
    values: dict[str, list[str]] = {}
    current: str | None = None
    for token in (part.strip() for part in text.split(",")):
        if not token:
            continue
        if "=" in token:
            key, _, value = token.partition("=")
            current = key.strip().lower()
            if current in values:
                raise InputError(f"{source}: {current} is given twice")
            values[current] = [value.strip()]
        elif current is None:
            raise InputError(f"{source}: {token!r} has no key; write key=value,... (e.g. scale=1/255)")
        else:
            values[current].append(token)
    single = {key: (vals[0] if len(vals) == 1 and key not in ("mean", "std") else vals) for key, vals in values.items()}
    return spec_from_mapping(single, source)


def _parse_json(text: str, source: str) -> PreprocessSpec:
    try:
        values = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{source} is not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise InputError(f"{source} must hold a JSON object of preprocessing keys")
    return spec_from_mapping(values, source)


def parse_spec(value: str) -> PreprocessSpec:
    """``--preprocess``: a JSON file's path, a JSON object, or ``key=value,...`` text."""
    if os.path.isfile(value):
        path = Path(value)
        if path.stat().st_size > _MAX_SPEC_BYTES:
            raise InputError(f"{path.name} is too large for a preprocessing spec (> {_MAX_SPEC_BYTES} bytes)")
        return _parse_json(path.read_text(encoding="utf-8", errors="replace"), path.name)
    if value.lstrip().startswith("{"):
        return _parse_json(value, "--preprocess")
    return parse_spec_text(value)


def spec_from_metadata(metadata: Mapping[str, str]) -> PreprocessSpec | None:
    """The spec the model states in its ``metadata_props`` (None when it states none)."""
    for key in METADATA_KEYS:
        if key in metadata:
            text = metadata[key]
            source = f"the model's metadata_props[{key!r}]"
            if len(text) > _MAX_SPEC_BYTES:
                raise InputError(f"{source} is too large for a preprocessing spec")
            return _parse_json(text, source) if text.lstrip().startswith("{") else parse_spec_text(text, source)
    return None


def check_against_model(spec: PreprocessSpec, shape: tuple[int, ...], expected: Sequence[Any], input_name: str) -> None:
    """One-line error when the preprocessed shape is not what the model's input declares."""
    if len(expected) != 3:
        raise InputError(
            f"input {input_name!r} expects samples of shape {list(expected)}, not an image "
            "(C x H x W or H x W x C); give an .npy/.npz instead"
        )
    fixed = [d if isinstance(d, int) and d > 0 else None for d in expected]
    if all(e is None or e == a for e, a in zip(fixed, shape, strict=True)):
        return
    hint = ""
    # The same tensor in the other layout: (C, H, W) -> (H, W, C) and back.
    swapped = (shape[1], shape[2], shape[0]) if spec.layout == "NCHW" else (shape[2], shape[0], shape[1])
    if all(e is None or e == a for e, a in zip(fixed, swapped, strict=True)):
        hint = f"; the model is {'NHWC' if spec.layout == 'NCHW' else 'NCHW'}: set layout= accordingly"
    else:
        channel_axis = 0 if spec.layout == "NCHW" else 2
        want_c = fixed[channel_axis]
        if want_c is not None and want_c != spec.num_channels:
            hint = f"; the model takes {want_c} channel(s): set channels={'L' if want_c == 1 else 'RGB'}"
        else:
            spatial = [fixed[i] for i in ((1, 2) if spec.layout == "NCHW" else (0, 1))]
            if None not in spatial:
                hint = f"; set resize/center_crop to give {spatial[0]}x{spatial[1]}"
    shown = ["?" if e is None else e for e in fixed]
    raise InputError(
        f"preprocessing ({spec.source}) gives samples of shape {list(shape)} ({spec.layout}), but input "
        f"{input_name!r} expects {shown}{hint}"
    )
