"""Lowering: rewrite control flow and the RNN family into ops that already have gradient rules.

The gradient builder (``build.py``) calls :func:`lower_for_gradients` once, where it first gets the
model. Constructs without gradient rules are rewritten into plain ops whose rules are tested, so
their gradients come from those rules and not from new hand-written ones:

- ``If`` with a condition known before run time (an initializer or Constant, possibly through
  Cast/Identity/Not or any other op on constants): the taken branch is inlined (control_flow.py).
- ``Loop`` with a constant trip count and a condition that stays constantly true, and ``Scan`` with
  static lengths: unrolled, one copy of the body per iteration (control_flow.py).
- ``LSTM``, ``GRU``, ``RNN`` at a static sequence length: unrolled into MatMul/Add/Sigmoid/Tanh/
  Relu/Mul/Sub/Slice/Squeeze/Unsqueeze/Concat/Transpose following the ONNX equations (recurrent.py).

Only nodes on the differentiable path are rewritten (the rest of the graph is left as it is). A
node on the path that cannot be lowered raises ``UnsupportedOpError`` naming the node and why; a
rewrite that would add more than ``MAX_UNROLLED_NODES`` nodes is refused the same way. Nested
constructs (an If inside a Loop body) are lowered in later rounds, after shape inference sees the
inlined body (an If on the iteration number then has a constant condition).

One named lowering function per op, registered where it is defined with ``@lowering("Op")``.
"""

from __future__ import annotations

from fimaudit.autodiff.lowering.core import MAX_UNROLLED_NODES, lower_for_gradients, lowered_ops

__all__ = ["MAX_UNROLLED_NODES", "lower_for_gradients", "lowered_ops"]
