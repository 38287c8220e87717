"""A plain description of a model: identity, interface, size and op mix (``fimaudit inspect``)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from fimaudit.graph.loader import LoadedModel
from fimaudit.graph.tensors import Dim, graph_inputs, type_description, value_shape


@dataclass
class TensorDescription:
    """One graph input or output as ``inspect`` shows it: name, shape (symbolic dims kept) and dtype."""
    name: str
    shape: list[Dim] | None
    dtype: str


@dataclass
class ModelDescription:
    """Everything ``inspect`` prints about a model, JSON-ready."""

    path: str
    sha256: str
    file_size: int
    producer: str
    producer_version: str
    ir_version: int
    opsets: dict[str, int]
    inputs: list[TensorDescription]
    outputs: list[TensorDescription]
    parameter_count: int
    node_count: int
    op_histogram: dict[str, int]
    external_data_files: list[str] = field(default_factory=list)
    external_data: list[dict[str, Any]] = field(default_factory=list)  # location, sha256, size of each file
    combined_sha256: str = ""  # the .onnx and every external-data file (see LoadedModel)
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the dataclass's fields, nested ones included)."""
        return asdict(self)


def _describe_value(value: onnx.ValueInfoProto) -> TensorDescription:
    described = type_description(value)
    dtype = described[len("tensor(") : -1] if described.startswith("tensor(") else described
    return TensorDescription(name=value.name, shape=value_shape(value), dtype=dtype)


def _tensor_size(tensor: onnx.TensorProto) -> int:
    """Elements of ``tensor`` as a Python int: a product of huge dims must not wrap around."""
    return math.prod(int(d) for d in tensor.dims)


def parameter_count(model: onnx.ModelProto) -> int:
    """Elements held in initializers and Constant nodes (weights however the exporter stored them)."""
    count = sum(_tensor_size(init) for init in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    count += _tensor_size(attribute.t)
    return count


def op_histogram(graph: onnx.GraphProto) -> dict[str, int]:
    """Count of nodes per op type, subgraphs included, most frequent first."""
    counts: Counter[str] = Counter()

    def visit(g: onnx.GraphProto) -> None:
        for node in g.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            counts[key] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(graph)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def describe_model(loaded: LoadedModel) -> ModelDescription:
    """Describe a loaded model for humans and for the JSON report."""
    model = loaded.proto
    return ModelDescription(
        path=str(loaded.path),
        sha256=loaded.sha256,
        file_size=loaded.file_size,
        producer=model.producer_name,
        producer_version=model.producer_version,
        ir_version=loaded.original_ir_version,
        opsets={(entry.domain or "ai.onnx"): int(entry.version) for entry in model.opset_import},
        inputs=[_describe_value(value) for value in graph_inputs(model.graph)],
        outputs=[_describe_value(value) for value in model.graph.output],
        parameter_count=parameter_count(model),
        node_count=len(model.graph.node),
        op_histogram=op_histogram(model.graph),
        external_data_files=loaded.external_data_files,
        external_data=[entry.to_dict() for entry in loaded.external_data],
        combined_sha256=loaded.combined_sha256,
        doc_string=model.doc_string,
        metadata={prop.key: prop.value for prop in model.metadata_props},
    )
