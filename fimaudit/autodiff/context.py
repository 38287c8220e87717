"""What a gradient rule sees: facts about the forward graph and helpers that emit gradient nodes.

Rules (see ``fimaudit/autodiff/registry.py`` for the contract) receive one ``RuleContext``. It
owns the nodes and initializers the rules emit, hands out fresh unique names, knows the model's
opset (so helpers emit the right form of Squeeze, ReduceSum, ...), the static shapes and element
types from shape inference, the constant values of initializers and Constant nodes, and which
tensors are on the differentiable path.

Conventions every helper follows:
- "lead" means the extra leading cotangent/tangent axis of size M (a gradient tensor of the
  forward tensor ``t`` with shape ``s`` has shape ``[M, *s]``).
- Helpers take and return tensor *names*; int64 shape tensors are 1-D.
- Float constants take the element type of a forward tensor (``like=``) or the model's float type,
  so the same rule builds float32 graphs for ONNX Runtime and float64 graphs for the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.tensors import Dim

# Opset in which an op's axes (or similar) moved from an attribute to an input.
AXES_AS_INPUT = {"Squeeze": 13, "Unsqueeze": 13, "ReduceSum": 13, "Split": 13}
REDUCE_AXES_AS_INPUT = 18  # every other Reduce* op
SLICE_INPUTS = 10  # Slice(data, starts, ends, axes, steps); before: starts/ends/axes attributes
PADS_AS_INPUT = 11  # Pad: pads and constant value moved from attributes to inputs


def _schema_since(op_type: str, opset: int) -> int | None:
    """The version of ``op_type``'s schema in effect at ``opset`` (None: the op does not exist yet)."""
    key = (op_type, opset)
    if key not in _SCHEMA_CACHE:
        try:
            _SCHEMA_CACHE[key] = int(onnx.defs.get_schema(op_type, opset, "").since_version)
        except onnx.defs.SchemaError:
            _SCHEMA_CACHE[key] = None
    return _SCHEMA_CACHE[key]


_SCHEMA_CACHE: dict[tuple[str, int], int | None] = {}


def optional_input(node: onnx.NodeProto, index: int) -> str | None:
    """``node.input[index]`` when present and not the empty 'omitted' name, else None."""
    if index < len(node.input) and node.input[index]:
        return node.input[index]
    return None


@dataclass
class GraphFacts:
    """Read-only facts about the forward graph, computed once by the builder."""

    #: Static shapes from shape inference (None when unknown); dims int, symbol or None.
    shapes: dict[str, list[Dim] | None]
    #: ONNX element types (TensorProto.FLOAT, ...), where known.
    elem_types: dict[str, int]
    #: Values of initializers and Constant-node outputs.
    constants: Mapping[str, np.ndarray]
    #: Tensors on the differentiable path (they depend on the input through float tensors).
    differentiable: set[str]
    #: The default-domain opset of the model.
    opset: int
    #: The float element type of the differentiated input (default for float constants).
    float_type: int = onnx.TensorProto.FLOAT
    #: The forward node that makes each tensor (a rule looking at where its operand comes from).
    producers: Mapping[str, onnx.NodeProto] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """A gradient that is ``slab`` zero-padded along one axis of its ``rank`` axes (lead axis included).

    ``begin`` zeros, the slab's ``length`` entries, zeros up to ``total``: the VJP of a Gather at one
    constant position or of a Slice along one axis. ``RuleContext.accumulate`` joins placements
    that tile an axis into one Concat instead of summing their padded copies.
    """

    slab: str
    axis: int
    begin: int
    length: int
    total: int
    rank: int


@dataclass
class RuleContext:
    """Emission state and helpers shared by all rules while one gradient model is built.

    ``mode`` is "vjp" or "jvp"; ``seed`` names the gradient tensor that enters the graph (the
    cotangent of the output or the tangent of the input), from which M is read at run time.
    """

    facts: GraphFacts
    mode: str
    seed: str
    prefix: str = "fimaudit_ad"
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    taken_names: set[str] = field(default_factory=set)
    _counter: int = 0
    _constant_cache: dict[tuple[int, tuple[int, ...], bytes], str] = field(default_factory=dict)
    _shape_cache: dict[tuple[str, int, int | None], str] = field(default_factory=dict)
    #: padded gradients by name, for ``accumulate`` (``place``)
    placements: dict[str, Placement] = field(default_factory=dict)

    # ---- facts -------------------------------------------------------------------------------
    @property
    def opset(self) -> int:
        """The model's default-domain opset: emitted nodes follow this version's forms."""
        return self.facts.opset

    def needs_gradient(self, name: str | None) -> bool:
        """True when ``name`` is on the differentiable path (it carries a cotangent/tangent)."""
        return bool(name) and name in self.facts.differentiable

    def static_shape(self, name: str) -> list[Dim] | None:
        """Shape of a *forward* tensor from shape inference: ints, symbols or None per dim."""
        return self.facts.shapes.get(name)

    def rank(self, name: str) -> int | None:
        """Rank of a forward tensor, or None when shape inference could not tell."""
        shape = self.static_shape(name)
        return None if shape is None else len(shape)

    def require_rank(self, name: str, node: onnx.NodeProto) -> int:
        """Rank of a forward tensor; raises UnsupportedOpError naming ``node`` when unknown."""
        rank = self.rank(name)
        if rank is None:
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name!r}: the rank of {name!r} is unknown after shape "
                "inference, and its gradient rule needs it",
                [node.op_type],
            )
        return rank

    @staticmethod
    def require_gradient(gradient: str | None, node: onnx.NodeProto) -> str:
        """``gradient`` itself, when the rule needs it; None (no cotangent/tangent) is refused naming ``node``.

        The builder calls a rule only when at least one gradient is present, so for a single-output
        VJP this never refuses; a JVP whose tangent arrives only on another input (Clip's bounds,
        a weight) is refused rather than emitting a node with a missing input.
        """
        if gradient is None:
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name!r}: its gradient rule needs a gradient that is not on the "
                "differentiable path",
                [node.op_type],
            )
        return gradient

    def elem_type(self, name: str) -> int:
        """ONNX element type of a forward tensor (the model's float type when unknown)."""
        return self.facts.elem_types.get(name, self.facts.float_type)

    def is_transposed_matrix(self, name: str) -> bool:
        """True when forward ``name`` is a last-two-axes Transpose, possibly then scaled by a scalar.

        Its gradient is transposed back by the Transpose's rule. TorchScript's attention exports
        K^T so (``k.transpose(-2, -1)``, then the scale): the MatMul rule then emits the gradient
        of K^T already transposed, and the Transpose of its transposed MatMul operand folds into
        the MatMul (ONNX Runtime's FusedMatMul) while the two transposes of the result cancel,
        instead of a Transpose kernel over M rows.
        """
        node = self.facts.producers.get(name)
        seen: set[int] = set()  # a malformed (cyclic) graph must not loop here
        while node is not None and node.op_type in ("Mul", "Div") and len(node.input) == 2 and id(node) not in seen:
            seen.add(id(node))
            moving = [index for index, operand in enumerate(node.input) if self.needs_gradient(operand)]
            if len(moving) != 1 or (node.op_type == "Div" and moving[0] != 0):
                return False
            scale = self.static_shape(node.input[1 - moving[0]])  # a scalar, constant or computed
            if scale is None or not all(isinstance(d, int) and d == 1 for d in scale):
                return False
            node = self.facts.producers.get(node.input[moving[0]])
        if node is None or node.op_type != "Transpose":
            return False
        perm = next((list(attribute.ints) for attribute in node.attribute if attribute.name == "perm"), None)
        rank = len(perm) if perm else 0
        return rank >= 2 and perm == [*range(rank - 2), rank - 1, rank - 2]

    def constant_value(self, name: str | None) -> np.ndarray | None:
        """Value of an initializer or Constant output; None when computed at run time."""
        if not name:
            return None
        return self.facts.constants.get(name)

    # ---- names and raw emission --------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        """A tensor/node name that is unique in the whole gradient model."""
        while True:
            self._counter += 1
            name = f"{self.prefix}/{hint}_{self._counter}"
            if name not in self.taken_names:
                self.taken_names.add(name)
                return name

    def emit(self, op_type: str, inputs: Sequence[str], /, **attributes: object) -> str:
        """Append one single-output node and return its output name.

        Keyword arguments are ONNX attributes (None values are dropped); positional parameters
        are positional-only so any attribute name (``num_outputs``, ``domain``...) is free.
        Nodes are emitted in the default ONNX domain.
        """
        return self.emit_multi(op_type, inputs, 1, **attributes)[0]

    def emit_multi(self, op_type: str, inputs: Sequence[str], count: int, /, **attributes: object) -> list[str]:
        """Append one node with ``count`` outputs and return their names."""
        if self.opset and _schema_since(op_type, self.opset) is None:
            raise UnsupportedOpError(
                f"the gradient rule needs {op_type}, which does not exist at the model's opset {self.opset}",
                [op_type],
            )
        outputs = [self.fresh(op_type.lower()) for _ in range(count)]
        # make_node takes attribute values as Any (its named parameters doc_string, domain... are str).
        attrs: dict[str, Any] = {key: value for key, value in attributes.items() if value is not None}
        node = helper.make_node(op_type, list(inputs), outputs, name=self.fresh(f"node_{op_type}"), **attrs)
        self.nodes.append(node)
        return outputs

    # ---- constants ---------------------------------------------------------------------------
    def constant(self, value: np.ndarray, hint: str = "const") -> str:
        """An initializer holding ``value`` (deduplicated by dtype, shape and bytes)."""
        # ascontiguousarray promotes 0-d arrays to shape [1]; keep true scalars scalar.
        array = np.ascontiguousarray(value).reshape(np.shape(value))
        key = (helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, array.tobytes())
        if key in self._constant_cache:
            return self._constant_cache[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        self._constant_cache[key] = name
        return name

    def float_dtype(self, like: str | None = None) -> np.dtype:
        """Numpy dtype of the forward float tensor ``like`` (or of the model's float input)."""
        elem = self.elem_type(like) if like else self.facts.float_type
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem))

    def scalar(self, value: float, like: str | None = None) -> str:
        """A 0-d float constant in the element type of ``like`` (or the model's float type)."""
        return self.constant(np.array(value, dtype=self.float_dtype(like)), "scalar")

    def ints(self, values: Iterable[int]) -> str:
        """A 1-D int64 constant (shapes, axes, starts/ends)."""
        return self.constant(np.array(list(values), dtype=np.int64), "ints")

    # ---- shapes at run time ------------------------------------------------------------------
    def shape_of(self, name: str, start: int = 0, end: int | None = None) -> str:
        """Int64 1-D tensor: ``Shape(name)[start:end]`` computed at run time (cached)."""
        key = (name, start, end)
        if key not in self._shape_cache:
            full = self._shape_cache.get((name, 0, None))
            if full is None:
                full = self.emit("Shape", [name])
                self._shape_cache[(name, 0, None)] = full
            if start == 0 and end is None:
                self._shape_cache[key] = full
            else:
                stop = np.iinfo(np.int64).max if end is None else end
                self._shape_cache[key] = self.slice(full, [start], [stop], [0])
        return self._shape_cache[key]

    def lead_dim(self) -> str:
        """Int64 tensor [M]: the size of the leading cotangent axis (read from the seed)."""
        return self.shape_of(self.seed, 0, 1)

    def lead_shape(self, forward: str) -> str:
        """Int64 tensor ``[M, *shape(forward)]``: the shape of ``forward``'s gradient."""
        shape = self.static_shape(forward)
        if shape is not None and all(isinstance(d, int) for d in shape):
            tail = self.ints(shape)  # type: ignore[arg-type]
        else:
            tail = self.shape_of(forward)
        return self.emit("Concat", [self.lead_dim(), tail], axis=0)

    def reshape_lead(self, tensor: str, target: str) -> str:
        """Reshape a gradient to ``[M, *target]``; ``target`` is an int64 1-D forward shape.

        The target must be explicit (no 0 or -1 entries that refer to the forward input): pass
        ``ctx.shape_of(forward)`` or a resolved shape.
        """
        return self.emit("Reshape", [tensor, self.emit("Concat", [self.lead_dim(), target], axis=0)])

    def reshape_like(self, tensor: str, forward: str, lead_first: bool = False) -> str:
        """Reshape a gradient to ``[M, *shape(forward)]``.

        With a static, non-empty forward shape the target is the constant ``[-1, *shape]``: the
        lead axis is inferred, so no Shape/Slice/Concat of the seed runs for it (a node or two
        per Reshape, tens per gradient graph; each costs a kernel launch per run).
        ``lead_first``: the caller knows ``tensor``'s axis 0 is the lead axis M (a gradient in
        the usual ``[M, ...]`` layout, not one folded into ``[M*B, ...]``). Then one unknown
        forward dimension (the batch of a model exported with a dynamic one, e.g. TorchScript's
        [L, B*H, d] attention reshapes) still gets a constant target, ``[0, ..., -1, ...]``: 0
        copies M from the tensor, -1 is the unknown one.
        """
        shape = self.static_shape(forward)
        if shape is not None:
            unknown = [axis for axis, d in enumerate(shape) if not (isinstance(d, int) and d > 0)]
            if not unknown:
                return self.emit("Reshape", [tensor, self.ints([-1, *shape])])  # type: ignore[list-item]
            if lead_first and len(unknown) == 1:
                target = [0, *(-1 if axis == unknown[0] else d for axis, d in enumerate(shape))]
                return self.emit("Reshape", [tensor, self.ints(target)])  # type: ignore[arg-type]
        return self.emit("Reshape", [tensor, self.lead_shape(forward)])

    def fold_lead(self, tensor: str) -> str:
        """Merge the lead axis into the next one: ``[M, B, *rest] -> [M*B, *rest]`` (Conv, pools)."""
        return self.emit("Reshape", [tensor, self.emit("Concat", [self.ints([-1]), self.shape_of(tensor, 2)], axis=0)])

    def unfold_lead(self, tensor: str) -> str:
        """Undo ``fold_lead``: ``[M*B, *rest] -> [M, B, *rest]``."""
        target = self.emit("Concat", [self.lead_dim(), self.ints([-1]), self.shape_of(tensor, 1)], axis=0)
        return self.emit("Reshape", [tensor, target])

    def zeros_lead_like(self, forward: str) -> str:
        """Explicit zeros of shape ``[M, *shape(forward)]`` (for a None cotangent of a multi-output op)."""
        return self.emit("Expand", [self.scalar(0.0, like=forward), self.lead_shape(forward)])

    # ---- axes --------------------------------------------------------------------------------
    @staticmethod
    def shift_axis(axis: int) -> int:
        """A forward axis as an axis of the gradient tensor: +1 when non-negative."""
        return axis + 1 if axis >= 0 else axis

    @staticmethod
    def shift_axes(axes: Iterable[int]) -> list[int]:
        """``shift_axis`` of each axis: forward axes as axes of the gradient (lead axis first)."""
        return [axis + 1 if axis >= 0 else axis for axis in axes]

    @staticmethod
    def normalize_axis(axis: int, rank: int) -> int:
        """A possibly negative forward axis as a non-negative one."""
        return axis + rank if axis < 0 else axis

    # ---- opset-aware emission helpers --------------------------------------------------------
    def _axes_form(
        self, op_type: str, since: int, inputs: list[str], axes: Sequence[int] | None, **attrs: object
    ) -> str:
        if axes is None:
            return self.emit(op_type, inputs, **attrs)
        if self.opset >= since:
            return self.emit(op_type, [*inputs, self.ints(axes)], **attrs)
        return self.emit(op_type, inputs, axes=list(axes), **attrs)

    def squeeze(self, tensor: str, axes: Sequence[int]) -> str:
        """Squeeze (axes as input from opset 13, attribute before)."""
        return self._axes_form("Squeeze", AXES_AS_INPUT["Squeeze"], [tensor], axes)

    def unsqueeze(self, tensor: str, axes: Sequence[int]) -> str:
        """Unsqueeze (axes as input from opset 13, attribute before)."""
        return self._axes_form("Unsqueeze", AXES_AS_INPUT["Unsqueeze"], [tensor], axes)

    def reduce(self, op_type: str, tensor: str, axes: Sequence[int] | None, keepdims: bool = True) -> str:
        """ReduceSum/ReduceMean/ReduceMax/... over ``axes`` (None: all axes) in the opset's form."""
        since = AXES_AS_INPUT.get(op_type, REDUCE_AXES_AS_INPUT)
        return self._axes_form(op_type, since, [tensor], axes, keepdims=int(keepdims))

    def reduce_sum(self, tensor: str, axes: Sequence[int] | None, keepdims: bool = True) -> str:
        """ReduceSum over ``axes`` (all when None) in the opset's form; the sum that undoes broadcasting."""
        return self.reduce("ReduceSum", tensor, axes, keepdims)

    def slice(
        self,
        tensor: str,
        starts: Sequence[int] | str,
        ends: Sequence[int] | str,
        axes: Sequence[int] | str | None = None,
        steps: Sequence[int] | str | None = None,
    ) -> str:
        """Slice in the opset's form; lists or names (inputs from opset 10, attributes before).

        Before opset 10 starts/ends/axes are attributes: names must then be constants, and steps
        other than 1 do not exist (UnsupportedOpError naming the opset otherwise).
        """

        def as_name(value: Sequence[int] | str) -> str:
            return value if isinstance(value, str) else self.ints(value)

        if self.opset < SLICE_INPUTS:
            return self._slice_attributes(tensor, starts, ends, axes, steps)
        inputs = [tensor, as_name(starts), as_name(ends)]
        if axes is not None or steps is not None:
            inputs.append(as_name(axes) if axes is not None else "")
        if steps is not None:
            inputs.append(as_name(steps))
        return self.emit("Slice", inputs)

    def _slice_attributes(
        self,
        tensor: str,
        starts: Sequence[int] | str,
        ends: Sequence[int] | str,
        axes: Sequence[int] | str | None,
        steps: Sequence[int] | str | None,
    ) -> str:
        def as_list(value: Sequence[int] | str, what: str) -> list[int]:
            if not isinstance(value, str):
                return [int(v) for v in value]
            constant = self.constant_value(value)
            if constant is None:
                constant = self._emitted_constant(value)
            if constant is None:
                raise UnsupportedOpError(
                    f"Slice before opset {SLICE_INPUTS} takes {what} as attributes; the gradient needs "
                    f"{what} computed at run time (model opset {self.opset})",
                    ["Slice"],
                )
            return [int(v) for v in np.asarray(constant).reshape(-1)]

        if steps is not None and any(step != 1 for step in as_list(steps, "steps")):
            raise UnsupportedOpError(
                f"Slice steps other than 1 need opset {SLICE_INPUTS} (model opset {self.opset})", ["Slice"]
            )
        big = np.iinfo(np.int64).max
        return self.emit(
            "Slice",
            [tensor],
            starts=as_list(starts, "starts"),
            ends=[min(int(v), big) for v in as_list(ends, "ends")],
            axes=None if axes is None else as_list(axes, "axes"),
        )

    def _emitted_constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer this context emitted (``ctx.ints``/``ctx.constant``)."""
        for init in self.initializers:
            if init.name == name:
                return numpy_helper.to_array(init)
        return None

    def transpose(self, tensor: str, perm: Sequence[int]) -> str:
        """Transpose of ``tensor`` by ``perm`` (axes of the tensor as given, lead axis included)."""
        return self.emit("Transpose", [tensor], perm=list(perm))

    def place(self, placement: Placement) -> str:
        """``placement.slab`` zero-padded as ``placement`` says (a constant Pad), remembered for ``accumulate``."""
        pads = [0] * (2 * placement.rank)
        pads[placement.axis] = placement.begin
        pads[placement.rank + placement.axis] = placement.total - placement.begin - placement.length
        padded = self.pad(placement.slab, pads)
        if padded != placement.slab:
            self.placements[padded] = placement
        return padded

    def pad(self, tensor: str, pads: list[int], mode: str = "constant") -> str:
        """``tensor`` padded by ``pads`` (begins of every axis, then ends) in the opset's form; itself if all 0."""
        if not any(pads):
            return tensor
        if self.opset < PADS_AS_INPUT:
            return self.emit("Pad", [tensor], pads=pads, mode=mode)
        return self.emit("Pad", [tensor, self.ints(pads)], mode=mode)

    def _tiled(self, names: Sequence[str]) -> str | None:
        """One Concat (and one Pad) for contributions that are disjoint placements along one axis.

        Why: the small ViT's q, k and v are Gathers of one qkv tensor; summing their three padded
        cotangents wrote and read three full-size tensors of mostly zeros (Pad + Sum were 11% of
        its VJP run); their slabs, side by side, are the same tensor.
        """
        placed = [self.placements.get(name) for name in names]
        if any(p is None for p in placed):
            return None
        pieces = sorted((p for p in placed if p is not None), key=lambda p: p.begin)
        first = pieces[0]
        if any((p.axis, p.total, p.rank) != (first.axis, first.total, first.rank) for p in pieces):
            return None
        if any(a.begin + a.length != b.begin for a, b in zip(pieces, pieces[1:], strict=False)):
            return None  # overlapping or with gaps: the plain sum
        joined = self.emit("Concat", [p.slab for p in pieces], axis=first.axis)
        length = pieces[-1].begin + pieces[-1].length - first.begin
        return self.place(Placement(joined, first.axis, first.begin, length, first.total, first.rank))

    def accumulate(self, names: Sequence[str]) -> str:
        """The sum of several gradient contributions (Add for two, Sum for more; ``_tiled`` where it applies)."""
        if len(names) == 1:
            return names[0]
        tiled = self._tiled(names)
        if tiled is not None:
            return tiled
        if len(names) == 2:
            return self.emit("Add", list(names))
        return self.emit("Sum", list(names))

    # ---- broadcasting ------------------------------------------------------------------------
    def lift(self, gradient: str, operand: str, result: str) -> str:
        """Unsqueeze ``[M, *shape(operand)]`` to rank(result) + 1 so that it broadcasts correctly.

        The lead axis breaks right-aligned broadcasting when an operand has a lower rank than the
        result (``[M, 3]`` against a forward ``[2, 3]`` would align M with 2): lifting inserts the
        missing axes after M. A no-op when the ranks agree.
        """
        rank_in = self.rank(operand)
        rank_out = self.rank(result)
        if rank_in is None or rank_out is None:
            raise UnsupportedOpError(f"cannot align the gradient of {operand!r} with {result!r}: rank unknown", [])
        if rank_in >= rank_out:
            return gradient
        return self.unsqueeze(gradient, list(range(1, rank_out - rank_in + 1)))

    def expand_to(self, gradient: str, operand: str, result: str) -> str:
        """A tangent of ``operand`` broadcast to exactly ``[M, *shape(result)]`` (forward mode)."""
        lifted = self.lift(gradient, operand, result)
        if self.static_shape(operand) == self.static_shape(result):
            return lifted
        return self.emit("Expand", [lifted, self.lead_shape(result)])

    def expand_lead(self, gradient: str, result: str) -> str:
        """Expand a gradient that broadcasts to ``[M, *shape(result)]`` to exactly that shape."""
        return self.emit("Expand", [gradient, self.lead_shape(result)])

    # ---- the one broadcasting helper ---------------------------------------------------------
    def unbroadcast(
        self, cotangent: str, operand: str, result: str | None = None, *, result_shape: Sequence[Dim] | None = None
    ) -> str:
        """Sum a cotangent of a broadcast result ([M, *shape(result)]) down to ``operand``.

        Returns a tensor of shape ``[M, *shape(operand)]``. Give the forward ``result`` tensor, or
        its static ``result_shape`` when the broadcast result is not a forward tensor (MatMul's
        batch axes). Static shapes decide which axes to sum when they can; otherwise (symbolic
        dims that may or may not be 1) the axes are computed at run time (opset 13+).
        """
        operand_shape = self.static_shape(operand)
        if result_shape is None:
            result_shape = self.static_shape(result) if result else None
        if operand_shape is None or result_shape is None:
            raise UnsupportedOpError(
                f"cannot undo broadcasting of {operand!r} into {result or 'its result'!r}: "
                "shapes unknown after shape inference",
                [],
            )
        result_shape = list(result_shape)
        rank_out, rank_in = len(result_shape), len(operand_shape)
        if operand_shape == result_shape:
            return cotangent
        extra = rank_out - rank_in
        axes: list[int] = list(range(1, extra + 1))
        decidable = True
        for i, dim in enumerate(operand_shape):
            out_dim = result_shape[extra + i]
            if dim == 1:
                if out_dim != 1:
                    axes.append(extra + i + 1)
            elif isinstance(dim, int) or (isinstance(dim, str) and dim == out_dim) or dim is None and out_dim == 1:
                continue
            else:
                decidable = False
        if not decidable:
            return self._unbroadcast_dynamic(cotangent, operand, rank_out, rank_in)
        reduced = self.reduce_sum(cotangent, axes, keepdims=True) if axes else cotangent
        if extra:
            reduced = self.squeeze(reduced, list(range(1, extra + 1)))
        return reduced

    def _unbroadcast_dynamic(self, cotangent: str, operand: str, rank_out: int, rank_in: int) -> str:
        if self.opset < AXES_AS_INPUT["ReduceSum"]:
            raise UnsupportedOpError(
                f"cannot undo broadcasting of {operand!r} at opset {self.opset}: "
                "dimensions are not known statically",
                [],
            )
        operand_shape = self.shape_of(operand)
        if rank_out > rank_in:
            operand_shape = self.emit("Concat", [self.ints([1] * (rank_out - rank_in)), operand_shape], axis=0)
        differs = self.emit("Not", [self.emit("Equal", [operand_shape, self.shape_of(cotangent, 1)])])
        axes = self.emit("Reshape", [self.emit("NonZero", [differs]), self.ints([-1])])
        axes = self.emit("Add", [axes, self.ints([1])])
        reduced = self.emit("ReduceSum", [cotangent, axes], keepdims=1, noop_with_empty_axes=1)
        return self.reshape_like(reduced, operand)
