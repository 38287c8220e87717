"""Load an ONNX file safely: bytes, external data, checker, shape inference, IR-version lowering.

Why a loader of our own rather than ``onnx.load``: auditors run fimaudit on files they did not
build, so external-data references are resolved by us and refused when they leave the model's
folder; and a model written by a newer ``onnx`` than the installed ONNX Runtime accepts is lowered
to an IR version the runtime can read, where its opsets allow, instead of failing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx import external_data_helper, numpy_helper, shape_inference

from fimaudit.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A validated model in memory, with its weights loaded and shapes inferred."""

    path: Path
    proto: onnx.ModelProto
    sha256: str
    file_size: int
    original_ir_version: int
    external_data_files: list[str]

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph

    def opset(self, domain: str = "") -> int:
        """The opset version imported for ``domain`` (the default ONNX domain unless given)."""
        for entry in self.proto.opset_import:
            if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
                return int(entry.version)
        return 0


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [
        tensor
        for tensor in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(tensor)
    ]


def _resolve_external_data(model: onnx.ModelProto, base_dir: Path) -> list[str]:
    """Check every external-data reference stays inside ``base_dir``, then load it.

    A reference that is absolute, climbs out with ``..`` or follows a symlink elsewhere is refused
    without opening it: reading arbitrary files named by an untrusted model is how data leaks.
    """
    tensors = _external_tensors(model)
    if not tensors:
        return []
    root = base_dir.resolve()
    locations: set[str] = set()
    for tensor in tensors:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise ModelError(f"tensor {tensor.name!r} uses external data but names no file")
        try:
            target = (root / location).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops, long names
            raise ModelError(
                f"tensor {tensor.name!r} names an unusable external data file {location[:80]!r} ({exc})"
            ) from exc
        if os.path.isabs(location) or root not in target.parents:
            raise ModelError(
                f"tensor {tensor.name!r} points to external data outside the model's folder "
                f"({location!r}); refusing to read it"
            )
        try:
            present = target.is_file()
        except (OSError, ValueError) as exc:
            raise ModelError(f"tensor {tensor.name!r} names an unusable external data file ({exc.strerror or exc})") from exc
        if not present:
            raise ModelError(
                f"external data file {location!r} for tensor {tensor.name!r} is missing "
                f"(expected beside the model in {root})"
            )
        locations.add(location)
    try:
        external_data_helper.load_external_data_for_model(model, str(root))
    except Exception as exc:  # onnx raises ValueError, OSError, ...: all mean a bad file
        raise ModelError(f"cannot read the model's external data: {exc}") from exc
    return sorted(locations)


def _parse(path: Path) -> onnx.ModelProto:
    data = path.read_bytes()
    if not data:
        raise ModelError(f"{path.name} is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path.name} is not a valid ONNX file (protobuf parse failed)") from exc
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
                found = _undecodable_text(item, f"{where}.{descriptor.name}[{index}]" if len(values) > 1 else f"{where}.{descriptor.name}")
                if found:
                    return found
    return None


def _checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as the installed checker can read it: a newer IR version is checked at ours.

    Its opsets are still checked, so a model that truly needs a newer onnx fails validation.
    """
    if model.ir_version <= onnx.IR_VERSION:
        return model
    logger.warning("IR version %d is newer than onnx %s knows; validating at IR %d", model.ir_version, onnx.__version__, onnx.IR_VERSION)
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    lowered.ir_version = onnx.IR_VERSION
    return lowered


def _check_weights(model: onnx.ModelProto, name: str) -> None:
    """Every stored tensor must hold the data its type and shape declare.

    The checker does not compare a tensor's bytes with its dims; a corrupt file would otherwise
    fail later, inside whatever first reads the weight.
    """
    for tensor in external_data_helper._get_all_tensors(model):
        try:
            numpy_helper.to_array(tensor)  # raw data is viewed, not copied
        except Exception as exc:  # onnx/numpy raise ValueError, TypeError, KeyError ... for bad tensors
            raise ModelError(
                f"{name} is corrupt: tensor {tensor.name!r} (dims {list(tensor.dims)}, type "
                f"{tensor.data_type}) does not hold the data its shape declares ({type(exc).__name__})"
            ) from exc


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Read, validate and shape-infer the ONNX model at ``path``.

    Raises ModelError with a one-line reason for anything that is not a usable ONNX model.
    """
    model_path = Path(path)
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}")
    sha, size = _sha256(model_path)
    model = _parse(model_path)
    external = _resolve_external_data(model, model_path.parent)
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
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
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
        external_data_files=external,
    )


def lowest_ir_version_for(model: onnx.ModelProto) -> int:
    """The lowest IR version whose ONNX release knows every opset the model imports.

    Used to lower a model written by a newer ``onnx`` (IR version too new for ONNX Runtime)
    without changing its meaning: an IR version only constrains the file format and the
    opsets it can carry.
    """
    needed = 3
    default_opset = max(
        (e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), default=1
    )
    for _release, ir_version, opset, *_rest in onnx.helper.VERSION_TABLE:
        if opset >= default_opset:
            needed = ir_version
            break
    else:
        needed = int(model.ir_version)
    return needed
