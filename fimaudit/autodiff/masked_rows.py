"""Skip the rows of a large weight that a mask zeroes anyway: products through a Linear layer and its ReLU.

Why: VGG's classifier is Gemm(25088 -> 4096), ReLU, Gemm(4096 -> 4096), ReLU, Gemm. Its JVP
computes t @ W^T over the whole 411 MB first weight on every product (memory-bound: about 35 ms
of a 75 ms JVP half at 3x224x224, two cores) and then multiplies by the ReLU's 0/1 mask, which
zeroes about half of the 4096 outputs. The mask is a forward tensor, so which outputs survive is
known once per sample: the forward half gathers those rows of W once (reading W once), and every
product of the sample reads only them (Lanczos at K = 1000 makes about 22).

Rewrite (JVP graphs; ``t`` depends on the seed; ``M`` and the initializer ``W`` [N, D] do not;
the MatMul's output has no other reader):

    Mul(MatMul(t, Transpose(W)), M)        (either operand order in the Mul)
    ->  idx   = the columns where M is nonzero in any row          (forward half)
        W_act = Gather(W, idx, axis=0)                              (forward half)
        Scatter(zeros [..., N], idx, Gemm(t, W_act, transB=1)) * M

In a VJP model made for products (``build_vjp_model(skip_masked_rows=True)``), the same rows:

    MatMul(Mul(g, M), W)  ->  MatMul(Gather(Mul(g, M), idx, axis=-1), W_act)

Exact: a skipped column is one where M is 0 in every row, so the product there was 0 (it stays
0, not NaN, when t @ W^T overflows there). Only for weights of at least ``MIN_WEIGHT_BYTES``:
gathering costs one read of W a sample, which pays from the second product on; a small
weight's product is not memory-bound. Not in the first VJP model: its gradient half also makes
the dense Jacobians (one run of K rows a sample), where the gather would cost more than it saves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from fimaudit.autodiff.context import RuleContext
from fimaudit.graph.onnx_utils import tensor_bytes

#: The model property saying how many products a gradient model has rewritten (build.py sets it).
COUNT_KEY = "fimaudit.masked_rows"
#: Weights below this size keep the plain product.
MIN_WEIGHT_BYTES = 16 * 2**20
#: Element types whose Equal, Gemm and ScatterElements ONNX Runtime's CPU provider has.
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
#: Gather with a negative axis, ScatterElements, Equal on floats: opset 11 on.
MIN_OPSET = 11


def record(model: onnx.ModelProto, count: int) -> None:
    """Say in the gradient model's properties how many products skip masked rows (the model's own entry goes)."""
    kept = [prop for prop in model.metadata_props if prop.key != COUNT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if count:
        model.metadata_props.add(key=COUNT_KEY, value=str(count))


def rewritten(model: onnx.ModelProto) -> int:
    """How many products of a gradient model skip masked rows (0 when none or not recorded)."""
    value = next((prop.value for prop in model.metadata_props if prop.key == COUNT_KEY), "0")
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class _Graph:
    """What the matchers read of the emitted nodes."""

    on_seed: set[str]
    readers: Counter
    producer: dict[str, onnx.NodeProto]
    weights: dict[str, onnx.TensorProto]

    def scaling(self, node: onnx.NodeProto | None) -> tuple[str, str] | None:
        """(gradient, factor) when ``node`` is a default-domain Mul of a seed tensor by a forward one."""
        if node is None or node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            return None
        left, right = (name in self.on_seed for name in node.input)
        if left == right:
            return None
        gradient, factor = node.input if left else reversed(node.input)
        return gradient, factor


def skip_masked_rows(ctx: RuleContext, weights: dict[str, onnx.TensorProto], keep: set[str]) -> int:
    """Rewrite ``ctx.nodes`` (the emitted nodes, in order) in place; return the rewrites made.

    ``weights``: the model's initializers by name (their dims and type are read, not their
    values); ``keep``: tensors read outside the nodes (the graph's outputs).
    """
    if ctx.opset < MIN_OPSET:
        return 0
    on_seed = {ctx.seed}
    for node in ctx.nodes:
        if any(name in on_seed for name in node.input):
            on_seed.update(node.output)
    readers = Counter(name for node in ctx.nodes for name in node.input)
    readers.update(keep)
    producer = {node.output[0]: node for node in ctx.nodes if len(node.output) == 1}
    graph = _Graph(on_seed, readers, producer, weights)
    made = 0
    rewritten: list[onnx.NodeProto] = []
    for node in ctx.nodes:
        jvp = _match_jvp(node, graph) if ctx.mode == "jvp" else None
        vjp = _match_vjp(node, graph) if ctx.mode == "vjp" else None
        if jvp is None and vjp is None:
            rewritten.append(node)
            continue
        emitted, ctx.nodes = ctx.nodes, []
        try:
            if jvp is not None:
                _emit_jvp_skipping(ctx, *jvp, node.output[0])
            elif vjp is not None:
                _emit_vjp_skipping(ctx, *vjp, node.output[0])
        finally:
            emitted, ctx.nodes = ctx.nodes, emitted
        rewritten.extend(emitted)
        made += 1
    ctx.nodes[:] = rewritten
    return made


def _match_jvp(node: onnx.NodeProto, graph: _Graph) -> tuple[str, str, str, int, int, int] | None:
    """(t, W, M, N, D, elem type) when ``node`` is Mul(MatMul(t, Transpose(W)), M) as the module doc says."""
    scaled = graph.scaling(node)
    if scaled is None:
        return None
    product, mask = scaled
    matmul = graph.producer.get(product)
    if matmul is None or matmul.op_type != "MatMul" or graph.readers[product] != 1 or len(matmul.input) != 2:
        return None
    tangent, operand = matmul.input
    if tangent not in graph.on_seed or operand in graph.on_seed:
        return None
    transpose = graph.producer.get(operand)
    if transpose is None or transpose.op_type != "Transpose" or len(transpose.input) != 1:
        return None
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    weight = _large_matrix(graph.weights.get(transpose.input[0]))
    if weight is None or perm not in (None, [1, 0]):
        return None
    rows, columns = (int(dim) for dim in weight.dims)
    return tangent, weight.name, mask, rows, columns, weight.data_type


def _match_vjp(node: onnx.NodeProto, graph: _Graph) -> tuple[str, str, str, int, int] | None:
    """(g * M, W, M, N, elem type) when ``node`` is MatMul(Mul(g, M), W) (see the module doc)."""
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    masked, operand = node.input
    weight = _large_matrix(graph.weights.get(operand))
    scaled = graph.scaling(graph.producer.get(masked))
    if weight is None or scaled is None or graph.readers[masked] != 1:
        return None
    return masked, weight.name, scaled[1], int(weight.dims[0]), weight.data_type


def _large_matrix(weight: onnx.TensorProto | None) -> onnx.TensorProto | None:
    """The initializer when it is a matrix of at least MIN_WEIGHT_BYTES with at least two rows."""
    if weight is None or len(weight.dims) != 2 or weight.data_type not in _FLOAT_TYPES:
        return None
    if tensor_bytes(weight) < MIN_WEIGHT_BYTES or int(weight.dims[0]) < 2:
        return None
    return weight


def _surviving_rows(ctx: RuleContext, weight: str, mask: str, rows: int, elem: int) -> tuple[str, str]:
    """(idx, W[idx]): the rows where the mask is nonzero in any row of it, and those rows of W.

    Forward side (nothing here reads the seed). Emitted alike in both modes, so that the shared
    forward half (shared_forward.py) computes them once for the VJP and the JVP.
    """
    zero = np.zeros((), helper.tensor_dtype_to_np_dtype(elem))
    full = ctx.emit("Expand", [mask, ctx.ints([rows])])  # a mask broadcast along its last axis
    flat = ctx.emit("Reshape", [full, ctx.ints([-1, rows])])
    nonzero = ctx.emit("Cast", [ctx.emit("Not", [ctx.emit("Equal", [flat, ctx.constant(zero, "zero")])])],
                       to=onnx.TensorProto.INT32)
    anywhere = ctx.reduce("ReduceMax", nonzero, [0], keepdims=False)
    index = ctx.emit("Reshape", [ctx.emit("NonZero", [anywhere]), ctx.ints([-1])])
    return index, ctx.emit("Gather", [weight, index], axis=0)


def _emit_vjp_skipping(
    ctx: RuleContext, masked: str, weight: str, mask: str, rows: int, elem: int, out: str
) -> None:
    """MatMul(g * M, W) as MatMul((g * M)[..., idx], W[idx]), writing ``out``."""
    index, active_rows = _surviving_rows(ctx, weight, mask, rows, elem)
    active = ctx.emit("Gather", [masked, index], axis=-1)
    ctx.nodes.append(helper.make_node("MatMul", [active, active_rows], [out], name=ctx.fresh("node_skip")))


def _emit_jvp_skipping(
    ctx: RuleContext, tangent: str, weight: str, mask: str, rows: int, columns: int, elem: int, out: str
) -> None:
    """The rewritten nodes, the last of which writes ``out`` (the Mul's output).

    Shapes are read with fresh Shape nodes, not ``ctx.shape_of``: its cached tensors may be made
    further down the node list than the node rewritten here.
    """
    index, active_rows = _surviving_rows(ctx, weight, mask, rows, elem)
    # Gradient side: the product over the surviving rows (2-D: Gemm reads W's rows as they lie),
    # scattered among zeros at full width (so that no shape has a zero the Reshape would copy
    # when no row survives), shaped back and masked as before.
    product = ctx.emit("Gemm", [ctx.emit("Reshape", [tangent, ctx.ints([-1, columns])]), active_rows], transB=1)
    product_shape = ctx.emit("Shape", [product])
    zeros_shape = ctx.emit("Concat", [ctx.slice(product_shape, [0], [1], [0]), ctx.ints([rows])], axis=0)
    zeros = ctx.emit("ConstantOfShape", [zeros_shape], value=helper.make_tensor("zero", elem, [1], [0]))
    where = ctx.emit("Expand", [index, product_shape])
    scattered = ctx.emit("ScatterElements", [zeros, where, product], axis=1)
    lead = ctx.slice(ctx.emit("Shape", [tangent]), [0], [-1], [0])
    shaped = ctx.emit("Reshape", [scattered, ctx.emit("Concat", [lead, ctx.ints([rows])], axis=0)])
    ctx.nodes.append(helper.make_node("Mul", [shaped, mask], [out], name=ctx.fresh("node_skip")))
