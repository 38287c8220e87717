"""Load an ONNX file safely: bytes, external data, checker, shape inference, IR-version lowering.

Why a loader of our own rather than ``onnx.load``: auditors run fimaudit on files they did not
build, so external-data references are resolved by us and refused when they leave the model's
folder; and a model written by a newer ``onnx`` than the installed ONNX Runtime accepts is lowered
to an IR version the runtime can read, where its opsets allow, instead of failing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx import numpy_helper

from fimaudit.confined import O_CLOEXEC, O_NONBLOCK, open_beneath, open_plain
from fimaudit.errors import ModelError, ResourceError
from fimaudit.graph.onnx_utils import element_size, infer_shapes_light, opset_version
from fimaudit.graph.tensor_walk import (
    FoundTensor,
    all_sparse_tensors,
    all_tensors,
    require_self_contained,
    uses_external_data,
)
from fimaudit.resources import WEIGHT_COPIES, MemoryBudget, format_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalDataFile:
    """One external-data file the model read: its location relative to the model's folder, and its hash."""

    location: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, for the report's provenance."""
        return {"location": self.location, "sha256": self.sha256, "size": self.size}


@dataclass
class LoadedModel:
    r"""A validated model in memory, with its weights loaded and shapes inferred.

    ``sha256`` covers the ``.onnx`` file only; ``combined_sha256`` pins the weights too: it is the
    SHA-256 of the sorted lines ``"<relative path>\0<sha256>\n"`` of the ``.onnx`` file and of every
    external-data file, hashed from the very bytes that were loaded.
    """

    path: Path
    proto: onnx.ModelProto
    sha256: str
    file_size: int
    original_ir_version: int
    external_data_files: list[str]
    external_data: list[ExternalDataFile] = field(default_factory=list)
    combined_sha256: str = ""

    @property
    def graph(self) -> onnx.GraphProto:
        """The model's main graph."""
        return self.proto.graph

    def opset(self, domain: str = "") -> int:
        """The opset version imported for ``domain`` (the default ONNX domain unless given)."""
        return opset_version(self.proto, domain)


def combined_digest(entries: list[tuple[str, str]]) -> str:
    r"""SHA-256 over the sorted lines ``"<relative path>\0<sha256>\n"`` of (path, sha256) pairs."""
    lines = sorted(f"{location}\0{sha}\n" for location, sha in entries)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


# Kernel pseudo-file systems: their files claim to be regular but are not data (reads block, fail or vary).
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
_BLOCK = 1 << 20
# No tensor, file or model larger than this is real (8 EiB): refuse instead of computing with it.
_ABSURD_BYTES = (1 << 63) - 1


def _read_model_file(path: Path, budget: MemoryBudget | None = None) -> bytes:
    """The model file's bytes, read once; anything but a regular file with data is refused unopened.

    Weights stored in the file itself are its bytes: with a ``budget``, a file too large to hold
    (its bytes, the parsed model and a transient copy while it is checked) is refused unread.
    """
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + os.sep) for root in _PSEUDO_ROOTS):
        raise ModelError(f"{path} is a kernel pseudo-file ({real}), not an ONNX model file")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"{path} is not a regular file (a folder, FIFO, socket or device); give an .onnx file")
    if budget is not None and WEIGHT_COPIES * info.st_size > budget.limit:
        raise ResourceError(
            f"reading the model file {path.name} ({format_size(info.st_size)}) needs at least "
            f"{format_size(WEIGHT_COPIES * info.st_size)} ({WEIGHT_COPIES} copies) but {budget.source}; raise "
            "--max-memory or audit a smaller model"
        )
    try:
        fd = os.open(path, os.O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    except OSError as exc:
        raise ModelError(f"cannot read the model file {path}: {exc.strerror or exc}") from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise ModelError(f"{path} changed while it was opened; refusing to read it")
        data = _read_exactly(fd, opened.st_size, str(path))
    finally:
        os.close(fd)
    return data


def _read_exactly(fd: int, size: int, name: str) -> bytes:
    chunks = []
    remaining = size
    try:
        while remaining > 0:
            chunk = os.read(fd, min(remaining, _BLOCK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read {name}: {exc.strerror or exc}") from exc
    if remaining:
        raise ModelError(f"{name} became shorter while it was read; refusing it")
    return b"".join(chunks)


@dataclass
class _Reference:
    """One tensor's checked claim on a byte range of an external-data file."""

    found: FoundTensor
    offset: int
    length: int | None  # None: to the end of the file


@dataclass
class _DataFile:
    location: str  # relative to the model's folder, '/'-separated
    real_path: str
    device_inode: tuple[int, int]
    size: int
    root: str = ""  # the model's folder (real path) that ``location`` is relative to
    references: list[_Reference] = field(default_factory=list)


def _element_count(dims: list[int], what: str) -> int:
    """The product of ``dims`` as a Python int (no wrap-around); negative or absurd dims are refused."""
    if any(d < 0 for d in dims):
        raise ModelError(f"{what} declares a negative dimension {list(dims)}")
    count = math.prod(dims)
    if count > _ABSURD_BYTES:
        raise ModelError(f"{what} declares {count:.3e} elements (dims {list(dims)}); no machine holds that")
    return count


def _declared_bytes(found: FoundTensor) -> int:
    tensor = found.tensor
    count = _element_count(list(tensor.dims), found.where)
    itemsize = element_size(tensor.data_type)
    if itemsize is None:
        return sum(len(item) for item in tensor.string_data)
    size = count * itemsize
    if size > _ABSURD_BYTES:
        raise ModelError(f"{found.where} declares {size:.3e} bytes (dims {list(tensor.dims)}); no machine holds that")
    return size


def _memory_needed(model: onnx.ModelProto, files: dict[str, _DataFile]) -> int:
    """Bytes the weights will occupy once loaded.

    Every tensor as declared, every external range as long as it is, and every sparse tensor's
    dense form (ONNX Runtime densifies sparse initializers). Python ints throughout: a product
    that overflows int64 cannot wrap to 0.
    """
    total = sum(_declared_bytes(found) for found in all_tensors(model))
    for data in files.values():
        for reference in data.references:  # a range longer than its tensor declares is read all the same
            length = reference.length if reference.length is not None else data.size - reference.offset
            total += max(0, length - _declared_bytes(reference.found))
    for sparse in all_sparse_tensors(model):
        itemsize = element_size(sparse.sparse.values.data_type) or 1
        total += _element_count(list(sparse.sparse.dims), sparse.where) * itemsize
    return total


def _parse_offset(value: str, key: str, found: FoundTensor) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ModelError(
            f"{found.where} has an invalid external data {key} {value[:40]!r} (a non-negative integer is required)"
        )
    if len(value.lstrip("0")) > 100:  # beyond any file (and int() refuses more than 4300 digits)
        raise ModelError(f"{found.where} has an external data {key} of {len(value)} digits; no file is that large")
    return int(value)


def _check_location(location: str, found: FoundTensor, root: str) -> str:
    """The real path of ``location`` inside ``root``; ModelError for anything that could leave it."""
    shown = location[:80]
    if not location:
        raise ModelError(f"{found.where} uses external data but names no file")
    if "\0" in location:
        raise ModelError(f"{found.where} names an unusable external data file {shown!r} (NUL byte)")
    parts = re.split(r"[\\/]", location)
    if os.path.isabs(location) or location.startswith("\\") or re.match(r"^[A-Za-z]:", location) or ".." in parts:
        raise ModelError(
            f"{found.where} points to external data outside the model's folder ({shown!r}); refusing to read it"
        )
    real = os.path.realpath(os.path.join(root, location))
    if real == root:
        raise ModelError(f"{found.where} names the model's folder itself ({shown!r}) as external data, not a file")
    if os.path.commonpath([root, real]) != root:
        raise ModelError(
            f"{found.where} points to external data outside the model's folder ({shown!r} leads to "
            f"{real[:120]!r} through a symlink); refusing to read it"
        )
    return real


def _external_files(model: onnx.ModelProto, root: str) -> dict[str, _DataFile]:
    """Every external reference of the model, checked without opening anything, grouped by file."""
    files: dict[str, _DataFile] = {}
    for found in all_tensors(model):
        tensor = found.tensor
        if not uses_external_data(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        real = _check_location(location, found, root)
        if element_size(tensor.data_type) is None:
            raise ModelError(
                f"{found.where} is a string or untyped tensor stored as external data; ONNX does not allow that"
            )
        offset = _parse_offset(info.get("offset", "0"), "offset", found)
        length = _parse_offset(info["length"], "length", found) if "length" in info else None
        if real not in files:
            try:
                status = os.lstat(real)
            except FileNotFoundError:
                raise ModelError(
                    f"external data file {location[:80]!r} for {found.where} is missing "
                    f"(expected beside the model in {root})"
                ) from None
            except (OSError, ValueError) as exc:
                raise ModelError(
                    f"{found.where} names an unusable external data file {location[:80]!r} "
                    f"({getattr(exc, 'strerror', None) or exc})"
                ) from exc
            if not stat.S_ISREG(status.st_mode):
                raise ModelError(
                    f"external data {location[:80]!r} of {found.where} is not a regular file (a FIFO, device, "
                    "socket or folder); refusing to open it"
                )
            relative = os.path.relpath(real, root).replace(os.sep, "/")
            files[real] = _DataFile(relative, real, (status.st_dev, status.st_ino), status.st_size, root)
        data = files[real]
        end = offset + (length if length is not None else 0)
        if offset > data.size or end > data.size:
            raise ModelError(
                f"{found.where} reads bytes {offset}..{end} of external data file {location[:80]!r}, "
                f"which has only {data.size} bytes"
            )
        data.references.append(_Reference(found, offset, length))
    return files


def _read_data_file(data: _DataFile) -> ExternalDataFile:
    """Read one checked file once: hash all of it, and copy each tensor's range into its raw_data."""
    try:
        fd = open_beneath(data.root, data.location) if data.root else open_plain(data.real_path)
    except OSError as exc:
        raise ModelError(f"cannot open external data file {data.location!r}: {exc.strerror or exc}") from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != data.device_inode:
            raise ModelError(f"external data file {data.location!r} changed after it was checked; refusing it")
        size = opened.st_size
        for reference in data.references:
            if reference.length is None:
                reference.length = size - reference.offset
            if reference.offset + reference.length > size:
                raise ModelError(f"external data file {data.location!r} became shorter after it was checked")
        pending = sorted(data.references, key=lambda r: r.offset)
        buffers = {id(r): bytearray(r.length or 0) for r in pending}
        active: list[_Reference] = []
        digest = hashlib.sha256()
        position = 0
        next_index = 0
        while position < size:
            try:
                block = os.read(fd, min(_BLOCK, size - position))
            except OSError as exc:
                raise ModelError(f"cannot read external data file {data.location!r}: {exc.strerror or exc}") from exc
            if not block:
                raise ModelError(f"external data file {data.location!r} became shorter while it was read")
            digest.update(block)
            block_end = position + len(block)
            while next_index < len(pending) and pending[next_index].offset < block_end:
                active.append(pending[next_index])
                next_index += 1
            still = []
            for reference in active:
                start = max(reference.offset, position)
                stop = min(reference.offset + (reference.length or 0), block_end)
                if stop > start:
                    target = buffers[id(reference)]
                    piece = block[start - position : stop - position]
                    target[start - reference.offset : stop - reference.offset] = piece
                if reference.offset + (reference.length or 0) > block_end:
                    still.append(reference)
            active = still
            position = block_end
    finally:
        os.close(fd)
    for reference in data.references:
        tensor = reference.found.tensor
        tensor.raw_data = bytes(buffers[id(reference)])
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return ExternalDataFile(data.location, digest.hexdigest(), size)


def _resolve_external_data(
    model: onnx.ModelProto, base_dir: Path, budget: MemoryBudget | None
) -> list[ExternalDataFile]:
    """Check every external-data reference of every tensor, plan the memory, then read them ourselves.

    A reference that is absolute, climbs out with ``..``, follows a symlink out of ``base_dir``,
    names anything but a regular file, or a byte range beyond the file's end is refused before
    anything opens it: reading arbitrary files named by an untrusted model is how data leaks.
    The bytes are copied into each tensor's ``raw_data`` and the reference removed, so the model
    ONNX Runtime gets is entirely in memory and can resolve no file name of its own.
    """
    root = os.path.realpath(base_dir)
    files = _external_files(model, root)
    weights = _memory_needed(model, files)
    if budget is not None and WEIGHT_COPIES * weights > budget.limit:
        raise ResourceError(
            f"this model needs at least {format_size(WEIGHT_COPIES * weights)} for its weights ({WEIGHT_COPIES} "
            f"copies of {format_size(weights)}) but {budget.source}; raise --max-memory or audit a smaller model"
        )
    read = [_read_data_file(data) for data in files.values()]
    require_self_contained(model)
    return sorted(read, key=lambda entry: entry.location)


def _parse(path: Path, data: bytes) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{path.name} is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path.name} is not a valid ONNX file (protobuf parse failed)") from exc
    # Fields this onnx does not know survive re-serialisation: a tensor-holding field that a newer
    # ONNX Runtime reads would reach it unchecked by the tensor walk. Dropped before anything looks.
    model.DiscardUnknownFields()
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelError(f"{path.name} is not an ONNX model (no graph found)")
    broken = _undecodable_text(model)
    if broken:
        raise ModelError(f"{path.name} is corrupt: its text field {broken} is not valid UTF-8")
    return model


def _undecodable_text(message: Message, where: str = "model") -> str | None:
    """The path of the first string field protobuf could not decode (it then hands out bytes).

    ONNX's proto2 strings are not validated on parsing: a corrupt name or producer would reach
    every later stage as ``bytes``; refuse it here instead.
    """
    for descriptor, value in message.ListFields():
        repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 5; older ones have .label
        if repeated is None:
            repeated = descriptor.label == FieldDescriptor.LABEL_REPEATED
        values = value if repeated else [value]
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            if any(isinstance(item, bytes) for item in values):
                return f"{where}.{descriptor.name}"
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            for index, item in enumerate(values):
                found = _undecodable_text(
                    item, f"{where}.{descriptor.name}[{index}]" if len(values) > 1 else f"{where}.{descriptor.name}"
                )
                if found:
                    return found
    return None


def _checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as the installed checker can read it: a newer IR version is checked at ours.

    Its opsets are still checked, so a model that truly needs a newer onnx fails validation.
    """
    if model.ir_version <= onnx.IR_VERSION:
        return model
    logger.warning(
        "IR version %d is newer than onnx %s knows; validating at IR %d",
        model.ir_version,
        onnx.__version__,
        onnx.IR_VERSION,
    )
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    lowered.ir_version = onnx.IR_VERSION
    return lowered


def _check_weights(model: onnx.ModelProto, name: str) -> None:
    """Every stored tensor must hold the data its type and shape declare.

    The checker does not compare a tensor's bytes with its dims; a corrupt file would otherwise
    fail later, inside whatever first reads the weight.
    """
    for found in all_tensors(model):
        tensor = found.tensor
        try:
            numpy_helper.to_array(tensor)  # raw data is viewed, not copied
        except Exception as exc:  # onnx/numpy raise ValueError, TypeError, KeyError ... for bad tensors
            raise ModelError(
                f"{name} is corrupt: {found.where} (dims {list(tensor.dims)}, type "
                f"{tensor.data_type}) does not hold the data its shape declares ({type(exc).__name__})"
            ) from exc


def load_model(path: str | os.PathLike[str], budget: MemoryBudget | None = None) -> LoadedModel:
    """Read, validate and shape-infer the ONNX model at ``path``.

    With a ``budget``, the weights' declared size is checked against it before any external data
    is read. Raises ModelError with a one-line reason for anything that is not a usable ONNX model
    (ResourceError when the weights cannot fit the budget).
    """
    model_path = Path(path)
    data = _read_model_file(model_path, budget)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    model = _parse(model_path, data)
    del data
    external = _resolve_external_data(model, model_path.parent, budget)
    combined = combined_digest([(model_path.name, sha)] + [(entry.location, entry.sha256) for entry in external])
    original_ir = int(model.ir_version)
    try:
        onnx.checker.check_model(_checkable(model))
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ModelError(f"{model_path.name} fails ONNX validation: {first_line}") from exc
    except ValueError as exc:  # e.g. > 2 GB protos; checker wants a path then
        raise ModelError(f"{model_path.name} cannot be validated in memory: {exc}") from exc
    _check_weights(model, model_path.name)
    try:
        inferred = infer_shapes_light(model)
    except Exception as exc:  # shape inference is advisory; an error there is not fatal
        logger.warning("shape inference failed (%s); continuing without inferred shapes", exc)
        inferred = model
    logger.info("loaded %s (IR %d, %d nodes)", model_path.name, original_ir, len(model.graph.node))
    return LoadedModel(
        path=model_path,
        proto=inferred,
        sha256=sha,
        file_size=size,
        original_ir_version=original_ir,
        external_data_files=[entry.location for entry in external],
        external_data=external,
        combined_sha256=combined,
    )
