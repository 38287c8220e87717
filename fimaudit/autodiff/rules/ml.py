"""Gradient rules of the ``ai.onnx.ml`` ops scikit-learn models are exported with (skl2onnx).

All of them read a batch X [N, F] (or one row [F]) and work along the last axis:

- LinearClassifier: scores s = X W^T + b (W: ``coefficients`` reshaped to [C, F]), then the
  ``post_transform``: NONE (s), SOFTMAX (softmax(s)), LOGISTIC (sigmoid(s)), SOFTMAX_ZERO
  (softmax(s) wherever no score lies within 1e-7 of 0, which is where ONNX Runtime's variant
  differs). PROBIT is refused by name: ONNX Runtime computes an approximate inverse error
  function whose derivative is not the probit's. One coefficient row for two classes (ONNX
  Runtime then invents the second column in one of four ways) is refused by name as well.
  Only the scores output (``Z``, output 1) carries a gradient; the label is an integer.
- LinearRegressor: y = X W^T + b (``targets`` rows); post_transform NONE only.
- Normalizer: y = x / n(x) per row with n = max(x) (MAX; ONNX Runtime divides by the largest
  value, not the largest magnitude), sum |x| (L1) or ||x||_2 (L2). Every case has the Jacobian
  J = (I - y s^T) / n with s = dn/dx: the one-hot vector of the arg-max (MAX), sign(x) (L1),
  y (L2). So VJP(g) = (g - s <g, y>) / n and JVP(t) = (t - y <s, t>) / n.
- Scaler: y = (x - offset) * scale (offset, scale of length 1 or F): diagonal.
- Binarizer, TreeEnsembleClassifier, TreeEnsembleRegressor, TreeEnsemble: piecewise constant in
  x, so their derivative is zero almost everywhere (it does not exist on the thresholds). Their
  rules return explicit zeros rather than a zero-gradient marker: a model whose every path runs
  through them has F = 0 almost everywhere, and a gradient graph that says exactly that is
  better than a finite difference that happens to straddle a threshold. The audit says so in
  its gradients note (``fimaudit/graph/ml_outputs.py``).

The spec fixes the outputs' type to float32 whatever X's (float64 inputs are allowed). Weights
are constants in X's type; a gradient crosses between the two types with CastLike to the forward
tensor it belongs to (Cast to the declared type before opset 15), so ONNX Runtime gets the types
the spec declares and a float64 reference run (onnx's evaluator keeps X's precision) stays
float64. Constants in the output's type are avoided (y - y y for y (1 - y); indicators cast
like a forward tensor).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from fimaudit.autodiff.context import RuleContext
from fimaudit.autodiff.registry import jvp_rule, vjp_rule
from fimaudit.errors import UnsupportedOpError
from fimaudit.graph.onnx_utils import attribute, int_attribute

ML = "ai.onnx.ml"
CASTLIKE_SINCE = 15
#: post_transforms of LinearClassifier that have a rule.
CLASSIFIER_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO")
#: Ops whose output is piecewise constant in their input: zero derivative almost everywhere.
PIECEWISE_CONSTANT = ("Binarizer", "TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")


def _cast_as(ctx: RuleContext, gradient: str, target: str, source: str) -> str:
    """``gradient`` (typed like forward ``source``) in the element type of forward ``target``."""
    if ctx.elem_type(target) == ctx.elem_type(source):
        return gradient
    if ctx.opset >= CASTLIKE_SINCE:
        return ctx.emit("CastLike", [gradient, target])
    return ctx.emit("Cast", [gradient], to=ctx.elem_type(target))


def _indicator(ctx: RuleContext, condition: str, like: str, declared: str) -> str:
    """A boolean tensor as 0/1 in the run-time type of forward ``like`` (declared like ``declared``)."""
    if ctx.opset >= CASTLIKE_SINCE:
        return ctx.emit("CastLike", [condition, like])
    return ctx.emit("Cast", [condition], to=ctx.elem_type(declared))


def _refuse(node: onnx.NodeProto, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"{node.op_type} node {node.name!r}: {why}", [f"{ML}::{node.op_type}"])


def _weights(ctx: RuleContext, node: onnx.NodeProto, rows_attribute: str | None, like: str) -> tuple[str, int]:
    """(W [rows, F] as a constant in the element type of forward ``like``, rows)."""
    coefficients = np.asarray(attribute(node, "coefficients", []), dtype=np.float64)
    features = ctx.static_shape(node.input[0])
    width = features[-1] if features else None
    if rows_attribute is None:
        if not isinstance(width, int) or width <= 0 or coefficients.size % width:
            raise _refuse(node, "the number of input features is unknown after shape inference")
        rows = coefficients.size // width
    else:
        rows = int_attribute(node, rows_attribute, 1)
        if rows <= 0 or coefficients.size % rows:
            raise _refuse(node, f"{coefficients.size} coefficients do not split into {rows} rows")
    matrix = coefficients.reshape(rows, -1).astype(ctx.float_dtype(like))
    return ctx.constant(matrix, "ml_weights"), rows


def _check_classifier(ctx: RuleContext, node: onnx.NodeProto) -> str:
    transform = str(attribute(node, "post_transform", "NONE"))
    if transform not in CLASSIFIER_TRANSFORMS:
        raise _refuse(
            node,
            f"post_transform {transform} has no gradient rule (ONNX Runtime's PROBIT is an approximate "
            f"inverse error function); rules exist for {', '.join(CLASSIFIER_TRANSFORMS)}",
        )
    label_ints = attribute(node, "classlabels_ints", [])
    label_strings = attribute(node, "classlabels_strings", [])
    labels = (len(label_ints) if isinstance(label_ints, list) else 0) or (
        len(label_strings) if isinstance(label_strings, list) else 0
    )
    _, rows = _weights(ctx, node, None, node.input[0])
    if rows == 1 and labels == 2:
        raise _refuse(
            node, "one coefficient row for two classes (ONNX Runtime derives the second score) has no gradient rule"
        )
    return transform


def _transform_product(ctx: RuleContext, transform: str, y: str, gradient: str) -> str:
    """The post_transform's Jacobian (symmetric in every supported case) applied to ``gradient``."""
    if transform == "NONE":
        return gradient
    if transform == "LOGISTIC":
        slope = ctx.emit("Sub", [y, ctx.emit("Mul", [y, y])])
        return ctx.emit("Mul", [gradient, slope])
    # SOFTMAX, SOFTMAX_ZERO: y * (v - <v, y>) over the last axis.
    inner = ctx.reduce_sum(ctx.emit("Mul", [gradient, y]), [-1], keepdims=True)
    return ctx.emit("Mul", [y, ctx.emit("Sub", [gradient, inner])])


@vjp_rule("LinearClassifier", domain=ML)
def linear_classifier_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = (T^T g) W with T the post_transform's Jacobian (the label output carries none)."""
    if len(grads) < 2 or grads[1] is None:
        return [None]
    transform = _check_classifier(ctx, node)
    x, scores = node.input[0], node.output[1]
    weights, _ = _weights(ctx, node, None, x)
    through = _cast_as(ctx, _transform_product(ctx, transform, scores, grads[1]), x, scores)
    return [ctx.emit("MatMul", [through, weights])]


@jvp_rule("LinearClassifier", domain=ML)
def linear_classifier_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_scores = T (t W^T); the label gets no tangent."""
    transform = _check_classifier(ctx, node)
    x, scores = node.input[0], node.output[1]
    weights, _ = _weights(ctx, node, None, x)
    moved = ctx.emit("MatMul", [ctx.require_gradient(tangents[0], node), ctx.transpose(weights, [1, 0])])
    return [None, _transform_product(ctx, transform, scores, _cast_as(ctx, moved, scores, x))]


def _check_regressor(node: onnx.NodeProto) -> None:
    transform = str(attribute(node, "post_transform", "NONE"))
    if transform != "NONE":
        raise _refuse(node, f"post_transform {transform} has no gradient rule (NONE has)")


@vjp_rule("LinearRegressor", domain=ML)
def linear_regressor_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = g W."""
    _check_regressor(node)
    x, y = node.input[0], node.output[0]
    weights, _ = _weights(ctx, node, "targets", x)
    return [ctx.emit("MatMul", [_cast_as(ctx, ctx.require_gradient(grads[0], node), x, y), weights])]


@jvp_rule("LinearRegressor", domain=ML)
def linear_regressor_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_y = t W^T."""
    _check_regressor(node)
    x, y = node.input[0], node.output[0]
    weights, _ = _weights(ctx, node, "targets", x)
    moved = ctx.emit("MatMul", [ctx.require_gradient(tangents[0], node), ctx.transpose(weights, [1, 0])])
    return [_cast_as(ctx, moved, y, x)]


# ---- Normalizer -------------------------------------------------------------------------------
def _normalizer_parts(ctx: RuleContext, node: onnx.NodeProto) -> tuple[str, str, str]:
    """(x cast to y's type, n = the norm per row [.., 1], s = dn/dx) from the forward input."""
    norm = str(attribute(node, "norm", "MAX"))
    x, y = node.input[0], node.output[0]
    xs = _cast_as(ctx, x, y, x)
    if norm == "MAX":
        largest = ctx.reduce("ReduceMax", xs, [-1], keepdims=True)
        slope = _indicator(ctx, ctx.emit("Equal", [xs, largest]), xs, y)
        return xs, largest, slope
    if norm == "L1":
        return xs, ctx.reduce_sum(ctx.emit("Abs", [xs]), [-1], keepdims=True), ctx.emit("Sign", [xs])
    if norm == "L2":
        squares = ctx.reduce_sum(ctx.emit("Mul", [xs, xs]), [-1], keepdims=True)
        return xs, ctx.emit("Sqrt", [squares]), y
    raise _refuse(node, f"norm {norm!r} is none of MAX, L1, L2")


@vjp_rule("Normalizer", domain=ML)
def normalizer_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """J^T g = (g - s <g, y>) / n."""
    x, y = node.input[0], node.output[0]
    _, norm, slope = _normalizer_parts(ctx, node)
    g = grads[0]
    along = ctx.reduce_sum(ctx.emit("Mul", [g, y]), [-1], keepdims=True)  # type: ignore[list-item]
    pulled = ctx.emit("Div", [ctx.emit("Sub", [g, ctx.emit("Mul", [slope, along])]), norm])  # type: ignore[list-item]
    return [_cast_as(ctx, pulled, x, y)]


@jvp_rule("Normalizer", domain=ML)
def normalizer_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """J t = (t - y <s, t>) / n."""
    x, y = node.input[0], node.output[0]
    _, norm, slope = _normalizer_parts(ctx, node)
    t = _cast_as(ctx, ctx.require_gradient(tangents[0], node), y, x)
    along = ctx.reduce_sum(ctx.emit("Mul", [t, slope]), [-1], keepdims=True)
    return [ctx.emit("Div", [ctx.emit("Sub", [t, ctx.emit("Mul", [y, along])]), norm])]


# ---- Scaler -----------------------------------------------------------------------------------
def _scale(ctx: RuleContext, node: onnx.NodeProto) -> str:
    values = np.asarray(attribute(node, "scale", [1.0]) or [1.0], dtype=np.float64)
    return ctx.constant(values.astype(ctx.float_dtype(node.input[0])), "ml_scale")


@vjp_rule("Scaler", domain=ML)
def scaler_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """g_x = g * scale (scale broadcasts along the last axis)."""
    x, y = node.input[0], node.output[0]
    return [ctx.emit("Mul", [_cast_as(ctx, ctx.require_gradient(grads[0], node), x, y), _scale(ctx, node)])]


@jvp_rule("Scaler", domain=ML)
def scaler_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """t_y = t * scale."""
    x, y = node.input[0], node.output[0]
    return [_cast_as(ctx, ctx.emit("Mul", [ctx.require_gradient(tangents[0], node), _scale(ctx, node)]), y, x)]


# ---- piecewise-constant ops: zero almost everywhere -------------------------------------------
def _zero_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Zeros shaped like the input: the output is piecewise constant in it."""
    return [ctx.zeros_lead_like(node.input[0])]


def _zero_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Zeros for every float output (labels are integers and get none)."""
    return [ctx.zeros_lead_like(name) if ctx.needs_gradient(name) else None for name in node.output]


@vjp_rule("Binarizer", domain=ML)
def binarizer_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Zero: a step function of x (1 above ``threshold``, else 0)."""
    return _zero_vjp(ctx, node, grads)


@jvp_rule("Binarizer", domain=ML)
def binarizer_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Zero: a step function of x."""
    return _zero_jvp(ctx, node, tangents)


@vjp_rule("TreeEnsembleClassifier", domain=ML)
def tree_ensemble_classifier_vjp(
    ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]
) -> list[str | None]:
    """Zero: the class scores are sums of leaf values, constant between split thresholds."""
    return _zero_vjp(ctx, node, grads)


@jvp_rule("TreeEnsembleClassifier", domain=ML)
def tree_ensemble_classifier_jvp(
    ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]
) -> list[str | None]:
    """Zero for the scores (output 1); the label gets none."""
    return _zero_jvp(ctx, node, tangents)


@vjp_rule("TreeEnsembleRegressor", domain=ML)
def tree_ensemble_regressor_vjp(
    ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]
) -> list[str | None]:
    """Zero: sums of leaf values, constant between split thresholds."""
    return _zero_vjp(ctx, node, grads)


@jvp_rule("TreeEnsembleRegressor", domain=ML)
def tree_ensemble_regressor_jvp(
    ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]
) -> list[str | None]:
    """Zero."""
    return _zero_jvp(ctx, node, tangents)


@vjp_rule("TreeEnsemble", domain=ML)
def tree_ensemble_vjp(ctx: RuleContext, node: onnx.NodeProto, grads: Sequence[str | None]) -> list[str | None]:
    """Zero (ai.onnx.ml opset 5's unified tree ensemble)."""
    return _zero_vjp(ctx, node, grads)


@jvp_rule("TreeEnsemble", domain=ML)
def tree_ensemble_jvp(ctx: RuleContext, node: onnx.NodeProto, tangents: Sequence[str | None]) -> list[str | None]:
    """Zero."""
    return _zero_jvp(ctx, node, tangents)
