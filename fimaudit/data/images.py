"""Image files as audit samples: a folder (ImageFolder convention) or a CSV list, read as hostile data.

- ``--data DIR``: every PNG/JPEG/BMP/WebP file below DIR, in sorted path order. When DIR holds
  sub-folders, each top-level sub-folder is a class (sorted names -> 0, 1, ..., torchvision's
  ImageFolder; folders named by integers are those class indices), and images directly in DIR
  are refused (they would have no label).
- ``--data LIST.csv``: rows ``path,label`` (an optional ``path,label`` header; the label may be
  empty, an integer class index, or a class name: names are numbered in sorted order). Paths are
  relative to the CSV's folder.

Everything named by the data is confined to its folder: absolute paths, ``..`` and symlinks that
resolve outside are refused, and files are opened one path component at a time without following
symlinks (a folder swapped for a symlink after the check fails to open). Only Pillow's PNG, JPEG,
BMP and WebP decoders are enabled (never, e.g., EPS, which runs Ghostscript), the pixel count is
checked from the header before decoding (decompression bombs), and every failure is one line
naming the file.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fimaudit.confined import open_beneath
from fimaudit.data.preprocess import PreprocessSpec, resized_size
from fimaudit.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: The decoders Pillow may use (Image.open(formats=...)): nothing that runs external programs.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
#: Largest decoded image (pixels): 8 x ImageNet's largest photos; a bomb declares far more.
MAX_IMAGE_PIXELS = 64_000_000
#: Largest image file read (bytes).
MAX_IMAGE_FILE_BYTES = 256 << 20
# Rows of a CSV list beyond which it is not a list of images (10 million).
_MAX_CSV_ROWS = 10_000_000



@dataclass(frozen=True)
class ImageList:
    """Image files (relative to ``root``), their class indices (or None), and the class names."""

    root: Path
    files: tuple[str, ...]
    labels: tuple[int, ...] | None
    class_names: tuple[str, ...] | None
    source: str


def is_image_list(path: Path) -> bool:
    """Whether ``--data`` names image data (a folder or a .csv list) rather than an array file."""
    return path.is_dir() or path.suffix.lower() == ".csv"


def _inside(root_real: str, candidate: str) -> bool:
    real = os.path.realpath(candidate)
    return real == root_real or real.startswith(root_real + os.sep)


def _walk(root: Path, root_real: str, relative: str = "") -> Iterator[str]:
    """Image files below ``root/relative`` (sorted), refusing symlinks that leave the folder."""
    folder = os.path.join(root, relative) if relative else str(root)
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise InputError(f"cannot list the data folder {relative or root.name}: {exc.strerror or exc}") from None
    for entry in entries:
        name = f"{relative}/{entry.name}" if relative else entry.name
        if entry.is_symlink():
            if not _inside(root_real, entry.path):
                raise InputError(f"{name} in the data folder is a symlink to a place outside it; refusing it")
            if entry.is_dir():  # a folder linked inside the tree would be listed twice (or loop)
                continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, root_real, name)
        elif entry.name.lower().endswith(IMAGE_SUFFIXES):
            yield name


def list_folder(root: Path) -> ImageList:
    """The images of a folder; top-level sub-folders are classes (ImageFolder)."""
    root_real = os.path.realpath(root)
    files = list(_walk(root, root_real))
    if not files:
        raise InputError(f"the data folder {root.name} holds no PNG/JPEG/BMP/WebP images")
    top_level = [name for name in files if "/" not in name]
    if top_level and len(top_level) != len(files):
        raise InputError(
            f"the data folder {root.name} holds images both directly ({top_level[0]}) and in sub-folders; "
            "with sub-folders every image must be in one (its class)"
        )
    if top_level:
        return ImageList(root, tuple(files), None, None, f"{root.name}/ ({len(files)} images)")
    classes = sorted({name.split("/", 1)[0] for name in files})
    index = {name: i for i, name in enumerate(classes)}
    if all(name.isdigit() for name in classes):  # folders 0 .. 9 are those classes ("10" sorts before "2")
        index = {name: int(name) for name in classes}
        classes = [str(i) for i in range(max(index.values()) + 1)]
    labels = tuple(index[name.split("/", 1)[0]] for name in files)
    return ImageList(
        root, tuple(files), labels, tuple(classes), f"{root.name}/ ({len(files)} images, {len(classes)} classes)"
    )


def _confined(root: Path, root_real: str, name: str, where: str) -> str:
    """``name`` as a clean relative path inside ``root``, or a one-line refusal."""
    text = name.strip().replace("\\", "/")
    if not text:
        raise InputError(f"{where}: empty path")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise InputError(f"{where}: {text!r} is an absolute path; paths are relative to the list's folder")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{where}: {text!r} leaves the list's folder ('..')")
    relative = "/".join(parts)
    if not _inside(root_real, os.path.join(root, relative)):
        raise InputError(f"{where}: {text!r} is a symlink to a place outside the list's folder")
    real = os.path.realpath(os.path.join(root, relative))
    return os.path.relpath(real, root_real).replace(os.sep, "/")


def list_csv(path: Path) -> ImageList:
    """The images named by a CSV of ``path,label`` rows, confined to the CSV's folder."""
    root = path.parent
    root_real = os.path.realpath(root)
    try:
        with path.open(newline="", encoding="utf-8", errors="strict") as handle:
            rows = []
            for number, row in enumerate(csv.reader(handle), start=1):
                if number > _MAX_CSV_ROWS:
                    raise InputError(f"{path.name} has more than {_MAX_CSV_ROWS} rows")
                if row and any(cell.strip() for cell in row):
                    rows.append((number, row))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path.name} is not a readable CSV file ({exc})") from None
    if rows and [cell.strip().lower() for cell in rows[0][1][:2]] in (["path", "label"], ["path"]):
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path.name} lists no images (rows of path,label)")
    files, raw_labels = [], []
    for number, row in rows:
        where = f"{path.name} line {number}"
        if len(row) > 2:
            raise InputError(f"{where}: {len(row)} columns; rows are path,label")
        files.append(_confined(root, root_real, row[0], where))
        raw_labels.append(row[1].strip() if len(row) > 1 else "")
    labels, names = _labels_from_text(raw_labels, path.name)
    return ImageList(root, tuple(files), labels, names, f"{path.name} ({len(files)} images)")


def _labels_from_text(raw: list[str], source: str) -> tuple[tuple[int, ...] | None, tuple[str, ...] | None]:
    """Integer labels as given, class names numbered in sorted order, or none at all."""
    if all(not text for text in raw):
        return None, None
    if any(not text for text in raw):
        first = next(i for i, text in enumerate(raw) if not text)
        raise InputError(f"{source}: row {first + 1} has no label while others do; label every row or none")
    try:
        values = tuple(int(text) for text in raw)
    except ValueError:
        names = sorted(set(raw))
        index = {name: i for i, name in enumerate(names)}
        return tuple(index[text] for text in raw), tuple(names)
    if min(values) < 0:
        raise InputError(f"{source}: class indices must be non-negative, got {min(values)}")
    return values, None


def read_image_bytes(root: Path, relative: str) -> bytes:
    """The bytes of one listed image file: a regular file inside ``root``, within the size limit."""
    try:
        fd = open_beneath(root, relative)
    except OSError as exc:
        raise InputError(f"cannot open the image {relative}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{relative} is not a regular file")
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            raise InputError(
                f"{relative} is {info.st_size} bytes, more than the {MAX_IMAGE_FILE_BYTES} an image may be"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_IMAGE_FILE_BYTES + 1)
    finally:
        os.close(fd)


def decode(data: bytes, name: str, spec: PreprocessSpec) -> np.ndarray:
    """One image file's bytes -> the preprocessed tensor (float64, the spec's layout)."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if spec.channels == "L" else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(PIL_FORMATS)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise InputError(
                        f"{name} declares {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} an image may have "
                        "(a decompression bomb?)"
                    )
                image.draft(mode, (width, height))
                converted = image.convert(mode)
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name} is not a readable PNG/JPEG/BMP/WebP image ({str(exc).splitlines()[0]})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's errors on corrupt data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{name} is a corrupt or truncated image ({first})") from None
    return preprocess_image(converted, spec)


def preprocess_image(image: object, spec: PreprocessSpec) -> np.ndarray:
    """Resize, crop, scale and normalise a decoded PIL image as ``spec`` says (float64)."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    if spec.resize is not None:
        height, width = resized_size(spec.resize, image.width, image.height)
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    if spec.center_crop is not None:
        crop_h, crop_w = spec.center_crop
        if crop_h > image.height or crop_w > image.width:
            raise InputError(
                f"center_crop={crop_h}x{crop_w} is larger than the image ({image.height}x{image.width} after resize)"
            )
        top = int(round((image.height - crop_h) / 2.0))
        left = int(round((image.width - crop_w) / 2.0))
        image = image.crop((left, top, left + crop_w, top + crop_h))
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.channels == "BGR":
        pixels = pixels[:, :, ::-1]
    # (pixel * scale - mean) / std in float64: the affine map of PreprocessSpec.affine, in
    # torchvision's order (ToTensor, then Normalize).
    values = (pixels * spec.scale - spec.per_channel(spec.mean)) / spec.per_channel(spec.std)
    return np.ascontiguousarray(values.transpose(2, 0, 1) if spec.layout == "NCHW" else values)
