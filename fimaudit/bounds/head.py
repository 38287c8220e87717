"""The linear head: logits = M h + b for the last input-dependent tensor h before the logits.

Why it matters for the Fisher bound: F = J^T C J with J = M J_h, so
lambda_max(F) = ||C^{1/2} M J_h||^2 <= ||C^{1/2} M||^2 ||J_h||^2, and ||C^{1/2} M|| is
computed exactly instead of being bounded by ||C||^{1/2} ||M||:
- at a sample, ||C(x)^{1/2} M||^2 = lambda_max(C^{1/2} M M^T C^{1/2}), a K x K eigenproblem;
- over all inputs, sup_p ||C(p)^{1/2} M||^2 = sup_{|u| = 1} sup_p Var_p(M u)
  = max_{i<j} ||m_i - m_j||^2 / 4 (Popoviciu: a variance is at most range^2 / 4, attained
  with half the mass on each end), with m_i the rows of M. Without a head (M = I) this is 1/2,
  the familiar ||C|| <= 1/2; with one it also removes the common shift of the logits, which
  the softmax ignores.
The head is found by walking back from the logits through reshapes, constant shifts, scalar
scalings, fimaudit's own two-class construction [0, s], and one dense layer with constant weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fimaudit.bounds.linalg import certify
from fimaudit.graph.onnx_utils import float_attribute, int_attribute
from fimaudit.graph.view import GraphView

_TRANSPARENT = {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Dropout"}


@dataclass
class LinearHead:
    """logits = matrix @ vec(tensor) + constant."""

    tensor: str
    matrix: np.ndarray  # K x m
    nodes: list[str] = field(default_factory=list)

    def global_factor(self) -> float:
        """Sup over probability vectors p of ||C(p)^{1/2} M||^2 = max_ij ||m_i - m_j||^2 / 4."""
        gram = self.matrix @ self.matrix.T
        diagonal = np.diag(gram)
        distances = diagonal[:, None] + diagonal[None, :] - 2.0 * gram
        scale = float(diagonal.max(initial=0.0))
        return certify(max(float(distances.max(initial=0.0)), 0.0) / 4.0, absolute=1e-12 * scale)

    def sample_factor(self, covariance_root: np.ndarray) -> float:
        """||C^{1/2} M||^2 at one sample (C^{1/2} given)."""
        projected = covariance_root @ self.matrix
        small = projected @ projected.T
        top = float(np.linalg.eigvalsh(small)[-1]) if small.size else 0.0
        return certify(max(top, 0.0), absolute=1e-14 * float(np.trace(small)))


def _width(view: GraphView, name: str) -> int | None:
    shape = view.shape(name)
    return int(np.prod(shape)) if shape is not None else None


def find_linear_head(view: GraphView, logits: str, num_classes: int) -> LinearHead:
    """The longest linear tail ending at ``logits`` (identity head when there is none)."""
    transform = np.eye(num_classes)
    current = logits
    nodes: list[str] = []
    while True:
        node = view.producer.get(current)
        if node is None:
            break
        varying = view.varying_inputs(node)
        if len(varying) != 1:
            if node.op_type == "Concat":
                picked = _concat_pick(view, node, transform)
                if picked is None:
                    break
                current, transform = picked
                nodes.append(node.name)
                continue
            break
        source = node.input[varying[0]]
        op = node.op_type
        if op in _TRANSPARENT or (op == "Cast" and view.is_float(current)):
            current = source
        elif op in ("Add", "Sub") and _width(view, source) == transform.shape[1]:
            if op == "Sub" and varying[0] == 1:
                transform = -transform
            current = source
        elif op == "Mul" and (factor := view.scalar_constant(node.input[1 - varying[0]])) is not None:
            transform = transform * factor
            current = source
        else:
            weight = _dense_weight(view, node, varying[0])
            if weight is None or weight.shape[0] != transform.shape[1]:
                break
            transform = transform @ weight
            nodes.append(node.name)
            current = source
            break
        nodes.append(node.name)
    return LinearHead(current, transform, nodes)


def _dense_weight(view: GraphView, node, index: int) -> np.ndarray | None:
    """The matrix W with output = W @ input for a dense layer on a [1, m] (or [m]) input."""
    shape = view.shape(node.input[index])
    if shape is None or int(np.prod(shape)) != shape[-1]:
        return None
    if node.op_type == "Gemm" and index == 0 and not int_attribute(node, "transA", 0):
        weight = view.const(node.input[1])
        if weight is None:
            return None
        b = np.asarray(weight, dtype=np.float64)
        b = b.T if int_attribute(node, "transB", 0) else b
        return float_attribute(node, "alpha", 1.0) * b.T
    if node.op_type == "MatMul" and index == 0:
        weight = view.const(node.input[1])
        if weight is None or weight.ndim != 2:
            return None
        return np.asarray(weight, dtype=np.float64).T
    return None


def _concat_pick(view: GraphView, node, transform: np.ndarray) -> tuple[str, np.ndarray] | None:
    """Concat whose inputs are one tensor s and zero multiples of it (fimaudit's [0 * s, s])."""
    shape = view.shape(node.output[0])
    axis = int_attribute(node, "axis", 0)
    if shape is None or int(np.prod(shape)) != shape[axis % len(shape)]:
        return None
    known = [_width(view, name) for name in node.input]
    widths = [w for w in known if w is not None]
    if len(widths) != len(known) or sum(widths) != transform.shape[1]:
        return None
    live = []
    for name in node.input:
        producer = view.producer.get(name)
        zero = (producer is not None and producer.op_type == "Mul"
                and any(view.scalar_constant(i) == 0.0 for i in producer.input))
        if name in view.varying and not zero:
            live.append(name)
    if len(live) != 1:
        return None
    position = list(node.input).index(live[0])
    start = sum(widths[:position])
    return live[0], transform[:, start : start + widths[position]]
