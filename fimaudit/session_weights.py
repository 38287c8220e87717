"""How a model's weights reach ONNX Runtime: small ones serialised with the graph, large ones in memory.

Why: serialising a model hands ONNX Runtime a copy of every weight, which it parses into yet
another. VGG-11 at 3x224x224 carries 507 MB of weights and a Lanczos audit builds three sessions
of it before its first product (the forward half, the VJP and the JVP gradient halves): 3-5 s and
about 1 GB resident per session, measured (benchmarks/README.md). A weight of at least
``IN_MEMORY_MIN_BYTES`` is instead given to ONNX Runtime as an external initializer held in memory
(``SessionOptions.add_external_initializers``): the serialised graph carries a placeholder of the
same name, type and shape whose data is marked external, and ONNX Runtime copies the values from
an OrtValue over a numpy view of the tensor's bytes while it loads the graph (documented for
``AddExternalInitializers``: the buffers may be freed once the session exists, and they are);
about 1 s and half the peak memory per session.

Hostile models: the placeholders are ours, made only for tensors that held their bytes; ONNX
Runtime swaps them for the in-memory values before it resolves any external path, so the
placeholder's location names no file that is ever opened (tests/hostile/test_in_memory_weights.py
plants one in the working directory and checks that it is not read). A model's own external data
has been refused before this point (``tensor_walk.require_self_contained``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import Message

from fimaudit.graph.onnx_utils import tensor_bytes

#: Initializers at least this large go to ONNX Runtime in memory; smaller ones are serialised
#: (a placeholder and an OrtValue cost more than a few kilobytes of bytes do).
IN_MEMORY_MIN_BYTES = 1 << 20

#: The placeholder's external-data location. Never opened (see the module doc); a fixed name so
#: that the hostile-input test can plant a file under it.
PLACEHOLDER_LOCATION = "fimaudit-weight-held-in-memory"

# Weight types whose raw bytes numpy reads as they are (ONNX stores them little-endian). Floats
# only: integer tensors are shapes, axes and indices, whose values ONNX Runtime's shape inference
# reads while loading the graph, and it cannot read them from a placeholder.
_NUMPY_TYPES: dict[int, np.dtype] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
}


@dataclass
class SessionPayload:
    """What one ``InferenceSession`` is made from: the serialised model and its in-memory weights.

    ``in_memory`` is needed only while the session is created (ONNX Runtime copies it).
    """

    serialised: bytes
    in_memory: dict[str, ort.OrtValue] = field(default_factory=dict)

    def options_with_weights(self, options: ort.SessionOptions) -> ort.SessionOptions:
        """``options`` with the in-memory weights added (a fresh options object per session)."""
        if self.in_memory:
            options.add_external_initializers(list(self.in_memory), list(self.in_memory.values()))
        return options


def session_payload(
    model: onnx.ModelProto, weights: Sequence[onnx.TensorProto] = (), ir_version: int | None = None
) -> SessionPayload:
    """The model with ``weights`` added to its initializers, as ONNX Runtime is to load it.

    ``ir_version``: the IR version to declare instead of the model's (a lowered one). The model
    and the weights are not changed.
    """
    if not _in_memory_supported() or not any(_held_in_memory(t) for t in (*model.graph.initializer, *weights)):
        serialised = _model_bytes(model, ir_version)
        return SessionPayload(b"".join([serialised, *initializers_on_the_wire(weights)]))
    shell = _without_initializers(model, ir_version)
    wired: list[onnx.TensorProto] = []
    in_memory: dict[str, ort.OrtValue] = {}
    for tensor in (*model.graph.initializer, *weights):
        if _held_in_memory(tensor):
            in_memory[tensor.name] = _ort_value(tensor)
            wired.append(_placeholder(tensor))
        else:
            wired.append(tensor)
    return SessionPayload(b"".join([shell.SerializeToString(), *initializers_on_the_wire(wired)]), in_memory)


def initializers_on_the_wire(weights: Iterable[onnx.TensorProto]) -> list[bytes]:
    """Pieces that, joined after a serialised ModelProto, add ``weights`` to its graph's initializers.

    Protocol buffers merge repeated occurrences of an embedded message field (here ModelProto's
    ``graph``, field 7) as MergeFrom does, appending repeated fields (GraphProto's
    ``initializer``, field 5). Each weight is serialised once and the pieces are joined once
    with the model's bytes: two copies of the weights in all, where copying them into the
    model and serialising it made three.
    """
    pieces: list[bytes] = []
    total = 0
    for tensor in weights:
        payload = tensor.SerializeToString()
        header = varint((5 << 3) | 2) + varint(len(payload))
        pieces += [header, payload]
        total += len(header) + len(payload)
    if not pieces:
        return []
    return [varint((7 << 3) | 2) + varint(total), *pieces]


def varint(value: int) -> bytes:
    """``value`` as a protocol-buffers base-128 varint."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _in_memory_supported() -> bool:
    # Raw bytes are little-endian; a big-endian host would need a byte swap (a copy): serialise there.
    return sys.byteorder == "little" and hasattr(ort.SessionOptions, "add_external_initializers")


def _held_in_memory(tensor: onnx.TensorProto) -> bool:
    """Whether ``tensor`` goes to ONNX Runtime in memory: large, plain raw bytes of a float type.

    Reads no bytes: ``raw_data`` is a copy on each access, so its size is computed from the shape.
    """
    if tensor.data_type not in _NUMPY_TYPES or tensor.data_location != onnx.TensorProto.DEFAULT:
        return False
    if tensor.HasField("segment") or not tensor.HasField("raw_data"):
        return False
    return tensor_bytes(tensor) >= IN_MEMORY_MIN_BYTES


def _ort_value(tensor: onnx.TensorProto) -> ort.OrtValue:
    """An OrtValue over ``tensor``'s bytes (one copy: protobuf hands out ``raw_data`` as new bytes).

    A size that does not match the shape is refused here rather than read past.
    """
    values = np.frombuffer(tensor.raw_data, dtype=_NUMPY_TYPES[tensor.data_type])
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if values.size != count:
        raise ValueError(f"initializer {tensor.name!r}: {values.size} values for a shape of {count}")
    return ort.OrtValue.ortvalue_from_numpy(values.reshape(tuple(tensor.dims)))


def _placeholder(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """``tensor``'s name, type and shape, its data marked external (ONNX Runtime takes it from memory)."""
    stand_in = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    stand_in.data_location = onnx.TensorProto.EXTERNAL
    entry = stand_in.external_data.add()
    entry.key, entry.value = "location", PLACEHOLDER_LOCATION
    return stand_in


def _model_bytes(model: onnx.ModelProto, ir_version: int | None) -> bytes:
    if ir_version is None or ir_version == model.ir_version:
        return model.SerializeToString()
    # The IR version is field 1, a varint: a later occurrence replaces an earlier one when parsed.
    return model.SerializeToString() + varint(1 << 3) + varint(ir_version)


def _without_initializers(model: onnx.ModelProto, ir_version: int | None) -> onnx.ModelProto:
    """``model`` without its graph's initializers, every other field copied (no weight is copied)."""
    shell = onnx.ModelProto()
    _copy_fields(model, shell, skip="graph")
    _copy_fields(model.graph, shell.graph, skip="initializer")
    if ir_version is not None:
        shell.ir_version = ir_version
    return shell


def _copy_fields(source: Message, target: Message, skip: str) -> None:
    for descriptor, value in source.ListFields():
        if descriptor.name == skip:
            continue
        if _is_repeated(descriptor):
            getattr(target, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _is_repeated(descriptor: object) -> bool:
    # protobuf >= 5.29 says ``is_repeated``; older ones only ``label`` (removed in 7).
    if hasattr(descriptor, "is_repeated"):
        return bool(descriptor.is_repeated)
    return bool(descriptor.label == descriptor.LABEL_REPEATED)  # type: ignore[attr-defined]
