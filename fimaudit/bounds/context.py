"""What a bound rule sees of its node: attributes, constants, shapes, values, magnitudes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from fimaudit.bounds.registry import BoundUnavailable
from fimaudit.graph.onnx_utils import attribute, float_attribute, int_attribute, ints_attribute, str_attribute
from fimaudit.graph.view import GraphView, Shape


@dataclass
class NodeContext:
    """One node as a rule sees it (shapes are at batch size 1: a bound is about one sample)."""

    node: onnx.NodeProto
    view: GraphView
    mode: str = "global"
    values: dict[str, np.ndarray] = field(default_factory=dict)
    magnitudes: dict[str, float] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        """The bound is per sample (values and magnitudes of this sample known), not over all inputs."""
        return self.mode == "local"

    @property
    def name(self) -> str:
        """The node's name, for messages."""
        return self.node.name

    def attr(self, name: str, default: object = None) -> object:
        """Attribute ``name`` untyped (strings decoded), for attributes whose type varies; else ``attr_<type>``."""
        return attribute(self.node, name, default)

    def attr_int(self, name: str, default: int) -> int:
        """INT attribute ``name`` (``default`` when absent)."""
        return int_attribute(self.node, name, default)

    def attr_float(self, name: str, default: float) -> float:
        """FLOAT attribute ``name`` (``default`` when absent)."""
        return float_attribute(self.node, name, default)

    def attr_ints(self, name: str) -> list[int] | None:
        """INTS attribute ``name``, or None when absent."""
        return ints_attribute(self.node, name)

    def attr_str(self, name: str, default: str) -> str:
        """STRING attribute ``name`` (``default`` when absent)."""
        return str_attribute(self.node, name, default)

    def input_name(self, index: int) -> str:
        """The name of input ``index``; "" when the input is absent (omitted optional inputs included)."""
        return self.node.input[index] if index < len(self.node.input) else ""

    def has_input(self, index: int) -> bool:
        """Input ``index`` is given (an optional input may be omitted or named "")."""
        return bool(self.input_name(index))

    def varying(self, index: int) -> bool:
        """Input ``index`` depends on the model input, so the bound must hold over all its values."""
        return self.input_name(index) in self.view.varying

    def varying_inputs(self) -> list[int]:
        """Indices of this node's inputs that depend on the model input."""
        return self.view.varying_inputs(self.node)

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of input ``index`` (None when it is computed or absent)."""
        name = self.input_name(index)
        return self.view.const(name) if name else None

    def require_const(self, index: int, what: str) -> np.ndarray:
        """The constant value of input ``index``; BoundUnavailable naming ``what`` when it is not constant."""
        value = self.const(index)
        if value is None:
            raise BoundUnavailable(f"{self.node.op_type} node {self.name!r}: {what} (input {index}) is not a constant")
        return np.asarray(value)

    def shape(self, index: int) -> Shape:
        """Static shape of input ``index`` at batch 1; BoundUnavailable when unknown."""
        name = self.input_name(index)
        shape = self.view.shape(name)
        if shape is None and name in self.values:
            shape = tuple(int(d) for d in self.values[name].shape)
        if shape is None:
            raise BoundUnavailable(f"{self.node.op_type} node {self.name!r}: the shape of {name!r} is unknown")
        return shape

    def output_shape(self, index: int = 0) -> Shape:
        """Static shape of output ``index`` at batch 1; BoundUnavailable when unknown."""
        name = self.node.output[index]
        shape = self.view.shape(name)
        if shape is None and name in self.values:
            shape = tuple(int(d) for d in self.values[name].shape)
        if shape is None:
            raise BoundUnavailable(f"{self.node.op_type} node {self.name!r}: the shape of output {name!r} is unknown")
        return shape

    def value(self, index: int) -> np.ndarray | None:
        """Input ``index`` at this sample (local mode), or its constant value, else None."""
        name = self.input_name(index)
        if name in self.values:
            return self.values[name]
        return self.view.const(name) if name else None

    def output_value(self, index: int = 0) -> np.ndarray | None:
        """Output ``index`` at this sample (local mode only), else None."""
        return self.values.get(self.node.output[index])

    def magnitude(self, index: int) -> float:
        """A bound on max |input_index| over the input domain (inf when unknown)."""
        name = self.input_name(index)
        constant = self.view.const(name) if name else None
        if constant is not None:
            return float(np.max(np.abs(constant))) if constant.size else 0.0
        return self.magnitudes.get(name, math.inf)
