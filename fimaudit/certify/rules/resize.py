"""Resize with constant roi/scales/sizes, mode nearest or linear: a fixed affine map of the input.

Why it is affine: with the output grid fixed by constant scales/sizes, ``nearest`` gathers one
input entry per output (or writes ``extrapolation_value`` outside a tf_crop_and_resize roi) and
``linear`` sums a fixed set of input entries with fixed non-negative weights. Neither depends on
the input's values, so the op is y = A x + b with A and b read off the node itself instead of
re-deriving every coordinate_transformation_mode / nearest_mode / antialias combination here.

How A is read: the node is run (onnx's ReferenceEvaluator, float64) on plane basis vectors, one
per (N, C) slot, so a 512-channel 7x7 map needs one run. That reading assumes Resize keeps N and
C and maps every plane alike; the map is then checked against a plain run of the node on the
value at x and on a seeded random tensor, and the node is refused when they disagree.

What is trusted: the index map and the interpolation weights as the reference implementation
computes them in float64 (the same footing as the stored weights of a Conv). ``cubic`` mode
(negative weights) and non-constant scales/sizes/roi are refused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from fimaudit.certify.registry import NodeContext, certify_rule
from fimaudit.certify.rules.linear import LinearRule

#: Largest dense plane map [out plane, in plane] built (entries); a bigger one is refused, not slowed into.
MAX_PLANE_ENTRIES = 2**24
#: Relative agreement required between the plane map and a plain run of the node (float64 sums).
CHECK_RTOL = 1e-12
_MODES = ("nearest", "linear")


def _single_node(ctx: NodeContext) -> onnx.ModelProto:
    """The Resize node alone, its constant inputs as float64/int64 initializers."""
    inputs, inits = ["x"], []
    for index in range(1, len(ctx.node.input)):
        name = ctx.node.input[index]
        if not name:
            inputs.append("")
            continue
        if ctx.boxes[index] is not None:
            raise ctx.refuse(f"input {index} ({name!r}) depends on the audited input (must be constant)")
        value = ctx.const(index)
        assert value is not None  # const refuses a missing non-varying input
        local = f"c{index}"
        inits.append(numpy_helper.from_array(np.asarray(value), local))
        inputs.append(local)
    node = helper.make_node("Resize", inputs, ["y"], name="resize")
    node.attribute.extend(ctx.node.attribute)
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, None)],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(ctx.view.opset))])


@certify_rule("Resize")
class ResizeRule(LinearRule):
    """y = A x + b per (N, C) plane, A read off the node (module docstring)."""

    def _setup(self, ctx: NodeContext) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]:
        """(plane map [Q, P], bias of the output's shape, input shape, output shape), computed once."""
        if "resize" in ctx.state:
            return ctx.state["resize"]
        if self.index(ctx) != 0:
            raise ctx.refuse("only the data input may depend on the audited input")
        if int(ctx.view.opset) < 11:  # Resize-10 reads (X, scales): another signature and other coordinates
            raise ctx.refuse(f"opset {ctx.view.opset} Resize is not handled (opset 11 and later are)")
        mode = ctx.attr_str("mode", "nearest")
        if mode not in _MODES:
            raise ctx.refuse(f"mode {mode!r} is not handled (nearest and linear are)")
        in_shape = tuple(ctx.box(0).at.shape)
        if len(in_shape) < 3:
            raise ctx.refuse(f"input of shape {in_shape} (expected [N, C, spatial...])")
        try:
            evaluator = ReferenceEvaluator(_single_node(ctx))
        except Exception as exc:  # an attribute or opset the reference runtime rejects
            raise ctx.refuse(f"the reference runtime cannot run this node ({exc})") from exc

        def run(x: np.ndarray) -> np.ndarray:
            (result,) = evaluator.run(None, {"x": x})
            return np.asarray(result, dtype=np.float64)

        bias = run(np.zeros(in_shape))
        out_shape = tuple(bias.shape)
        if out_shape[:2] != in_shape[:2]:
            raise ctx.refuse(f"resizing the N or C axis ({in_shape} -> {out_shape}) is not handled")
        slots = in_shape[0] * in_shape[1]
        plane_in, plane_out = int(np.prod(in_shape[2:])), int(np.prod(out_shape[2:]))
        if plane_in * plane_out > MAX_PLANE_ENTRIES:
            raise ctx.refuse(f"a {plane_in} -> {plane_out} plane map is too large to build")
        plane = np.zeros((plane_out, plane_in))
        for start in range(0, plane_in, slots):
            count = min(slots, plane_in - start)
            probe = np.zeros((slots, plane_in))
            probe[np.arange(count), start + np.arange(count)] = 1.0
            image = run(probe.reshape(in_shape)) - bias
            plane[:, start:start + count] = image.reshape(slots, plane_out)[:count].T
        state = (plane, bias, in_shape, out_shape)
        rng = np.random.default_rng(0)
        for check in (ctx.box(0).at, rng.standard_normal(in_shape)):
            expected = run(np.asarray(check, dtype=np.float64))
            got = self._apply(state, np.asarray(check, dtype=np.float64)[None], absolute=False)[0] + bias
            scale = float(np.abs(check).max(initial=0.0)) + float(np.abs(bias).max(initial=0.0)) + 1e-300
            if not np.all(np.abs(got - expected) <= CHECK_RTOL * scale):
                raise ctx.refuse("the node does not map every (N, C) plane alike; not handled")
        if mode == "linear" and np.any(plane < 0):
            raise ctx.refuse("linear mode gave a negative weight")
        ctx.state["resize"] = state
        return state

    @staticmethod
    def _apply(state: tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]], stack: np.ndarray,
               absolute: bool) -> np.ndarray:
        plane, _, in_shape, out_shape = state
        matrix = np.abs(plane) if absolute else plane
        flat = stack.reshape(stack.shape[0], in_shape[0] * in_shape[1], -1)
        return np.einsum("qp,nsp->nsq", matrix, flat).reshape(stack.shape[0], *out_shape)

    def apply(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A (or |A|) on every tensor of the stack, plane by plane."""
        return self._apply(self._setup(ctx), stack, absolute)

    def transpose(self, ctx: NodeContext, stack: np.ndarray, absolute: bool) -> np.ndarray:
        """A^T (or |A|^T): each output row sent back to the entries it gathered or interpolated."""
        plane, _, in_shape, out_shape = self._setup(ctx)
        matrix = np.abs(plane) if absolute else plane
        flat = stack.reshape(stack.shape[0], in_shape[0] * in_shape[1], -1)
        return np.einsum("qp,nsq->nsp", matrix, flat).reshape(stack.shape[0], *in_shape)

    def bias(self, ctx: NodeContext) -> np.ndarray | float:
        """The constant part (extrapolation_value outside a tf_crop_and_resize roi; else zero)."""
        return self._setup(ctx)[1]

    def fan_in(self, ctx: NodeContext) -> int:
        """The most entries one output sums."""
        return max(int(np.count_nonzero(self._setup(ctx)[0], axis=1).max(initial=1)), 1)

    def row_norms(self, ctx: NodeContext, q: float) -> np.ndarray:
        """||A_i||_q per output entry (every plane alike)."""
        plane, _, _, out_shape = self._setup(ctx)
        norms = np.linalg.norm(plane, ord=q, axis=1)
        return norms.reshape(1, 1, *out_shape[2:])
