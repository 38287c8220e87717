"""The op-case table format for the gradient-rule test (tests/autodiff/test_rules.py).

Each rule family has its own module ``tests/autodiff/cases_<family>.py`` defining
``CASES: list[OpCase]``; test_rules.py collects every such module into ONE table, so engineers add
cases without editing the same file.

A case is a tiny graph from input ``x`` to output ``y`` built at a float element type (float64
for the ReferenceEvaluator checks, float32 for ONNX Runtime). Weights are given as numpy arrays:
float arrays are cast to the case's float type, others (int64 axes, shapes) are kept as they are.
Use the placeholder ``FLOAT`` in an attribute (e.g. Cast ``to=FLOAT``) for "the case's float type".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT = "__case_float_type__"  # placeholder attribute value: the case's float element type

Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Default input sampler: standard normal."""
    return rng.normal(size=shape)


def positive(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs in [0.5, 2] (Log, Sqrt, Pow with a real exponent)."""
    return rng.uniform(0.5, 2.0, size=shape)


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """|x| in [0.2, 2] with random signs: away from the kink of ReLU-like maps at 0."""
    return rng.uniform(0.2, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random permutation of well-separated values: no ties for Max/MaxPool/ReduceMax."""
    count = int(np.prod(shape))
    return (rng.permutation(count).astype(np.float64) * 0.37 - count * 0.15).reshape(shape)


@dataclass(frozen=True)
class OpCase:
    """One graph x -> y exercising one op's rules (and possibly others, listed in ``covers``)."""

    id: str
    nodes: Callable[[], Sequence[onnx.NodeProto]]
    x_shape: tuple[int, ...]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    sample: Sampler = normal
    covers: tuple[str, ...] = ()
    #: Relative tolerance of the float64 finite-difference check (loosen for steep functions).
    fd_rtol: float = 1e-6
    #: Relative tolerance of ONNX Runtime float32 against the float64 reference.
    f32_rtol: float = 1e-4
    #: Declare x's first dimension as the symbol "N" (as exporters do for a dynamic batch).
    symbolic_batch: bool = False
    #: Opsets of other domains the nodes use, e.g. (("ai.onnx.ml", 3),) for scikit-learn's ops.
    domains: tuple[tuple[str, int], ...] = ()

    def build(self, dtype: np.dtype) -> onnx.ModelProto:
        """The case's model at float ``dtype`` (np.float32 or np.float64)."""
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        nodes = [_resolve_float(node, elem) for node in self.nodes()]
        initializers = []
        for name, value in self.weights.items():
            array = np.asarray(value)
            if array.dtype.kind == "f":
                array = array.astype(dtype)
            initializers.append(numpy_helper.from_array(array, name))
        graph = helper.make_graph(
            nodes,
            self.id.replace("/", "_"),
            [helper.make_tensor_value_info("x", elem, ["N", *self.x_shape[1:]] if self.symbolic_batch else list(self.x_shape))],
            [helper.make_tensor_value_info("y", onnx.TensorProto.UNDEFINED, None)],
            initializers,
        )
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(domain, version) for domain, version in self.domains]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8 if self.opset <= 18 else 10
        inferred = onnx.shape_inference.infer_shapes(model)
        for value in inferred.graph.value_info:
            if value.name == "y":  # declare y's inferred type on the output
                inferred.graph.output[0].CopyFrom(value)
        if not inferred.graph.output[0].type.tensor_type.elem_type:  # not inferred (GroupNormalization)
            inferred.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", elem, None))
        return inferred

    @property
    def ops(self) -> tuple[str, ...]:
        """Ops whose rules this case checks: ``covers`` or, by default, the first node's op
        (named as the registry names it: ``domain::Op`` outside the default domain)."""
        if self.covers:
            return self.covers
        first = self.nodes()[0]
        return (f"{first.domain}::{first.op_type}" if first.domain not in ("", "ai.onnx") else first.op_type,)


def _resolve_float(node: onnx.NodeProto, elem: int) -> onnx.NodeProto:
    resolved = onnx.NodeProto()
    resolved.CopyFrom(node)
    for attr in resolved.attribute:
        if attr.type == onnx.AttributeProto.STRING and attr.s == FLOAT.encode():
            attr.ClearField("s")
            attr.type = onnx.AttributeProto.INT
            attr.i = elem
    return resolved


def single(
    id: str,
    op_type: str,
    x_shape: Sequence[int],
    inputs: Sequence[str] = ("x",),
    weights: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    sample: Sampler = normal,
    output: int = 0,
    num_outputs: int = 1,
    fd_rtol: float = 1e-6,
    f32_rtol: float = 1e-4,
    symbolic_batch: bool = False,
    **attributes: object,
) -> OpCase:
    """A one-node case: ``op_type(inputs) -> y`` (``output`` picks which output is y).

    ``inputs`` names "x" for the differentiated input (possibly several times), weight names
    from ``weights``, or "" for an omitted optional input.
    """
    outputs = [f"out{i}" for i in range(num_outputs)]
    outputs[output] = "y"

    def nodes() -> list[onnx.NodeProto]:
        return [helper.make_node(op_type, list(inputs), outputs, **attributes)]

    return OpCase(
        id=id,
        nodes=nodes,
        x_shape=tuple(x_shape),
        weights=dict(weights or {}),
        opset=opset,
        sample=sample,
        covers=(op_type,),
        fd_rtol=fd_rtol,
        f32_rtol=f32_rtol,
        symbolic_batch=symbolic_batch,
    )


def chain(
    id: str,
    nodes: Callable[[], Sequence[onnx.NodeProto]],
    x_shape: Sequence[int],
    covers: Sequence[str],
    weights: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    sample: Sampler = normal,
    fd_rtol: float = 1e-6,
    f32_rtol: float = 1e-4,
    symbolic_batch: bool = False,
) -> OpCase:
    """A several-node case (x -> ... -> y), e.g. an op whose second operand is also on the path."""
    return OpCase(
        id=id,
        nodes=nodes,
        x_shape=tuple(x_shape),
        weights=dict(weights or {}),
        opset=opset,
        sample=sample,
        covers=tuple(covers),
        fd_rtol=fd_rtol,
        f32_rtol=f32_rtol,
        symbolic_batch=symbolic_batch,
    )


def weights_rng(seed: int) -> np.random.Generator:
    """The RNG case modules use for their weights (fixed seed: deterministic tables)."""
    return np.random.default_rng(seed)
