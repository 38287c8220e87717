"""Lowerings of LSTM, GRU and RNN at a static sequence length: the recurrence unrolled.

The ONNX equations (operators.md; ``.`` is the elementwise product, ``*`` a matrix product,
f, g, h the activations; W, R, B sliced per direction, gates in the spec's order):

- RNN (gate i):      H_t = f(X_t*W^T + H_{t-1}*R^T + Wb + Rb)
- LSTM (gates iofc, peepholes P = [Pi, Po, Pf]):
  i = f(X_t*Wi^T + H_{t-1}*Ri^T + Pi . C_{t-1} + Wbi + Rbi), f_t likewise with Pf,
  c = g(X_t*Wc^T + H_{t-1}*Rc^T + Wbc + Rbc), C_t = f_t . C_{t-1} + i . c,
  o = f(X_t*Wo^T + H_{t-1}*Ro^T + Po . C_t + Wbo + Rbo), H_t = o . h(C_t)
- GRU (gates zrh): z = f(X_t*Wz^T + H_{t-1}*Rz^T + Wbz + Rbz), r likewise,
  h~ = g(X_t*Wh^T + (r . H_{t-1})*Rh^T + Rbh + Wbh)          (linear_before_reset = 0)
  h~ = g(X_t*Wh^T + r . (H_{t-1}*Rh^T + Rbh) + Wbh)          (linear_before_reset != 0)
  H_t = (1 - z) . h~ + z . H_{t-1}, emitted as h~ + z . (H_{t-1} - h~) (no float constant).

The input projection X*W^T (+ the biases that add outside any product) is one MatMul over all
time steps; each step slices its row (Slice + Squeeze) and adds H_{t-1}*R^T (one MatMul, gates
sliced from it). Without initial_h/initial_c the initial state is zero, so the first step's
recurrent terms are left out (no zero tensor of the run-time batch size is needed). Reverse
directions run t = S-1 .. 0; Y holds each direction's H_t at time t. Outputs follow the spec's
shapes: layout 0 Y [S, D, B, H], Y_h/Y_c [D, B, H]; layout 1 Y [B, S, D, H], Y_h/Y_c [B, D, H].

Lowered: directions forward/reverse/bidirectional, activations Sigmoid/Tanh/Relu (default or in
``activations``), optional B/initial_h/initial_c/P, sequence_lens absent or known to be the full
length, layout 0 and 1, GRU's linear_before_reset. Refused by name: ``clip``, LSTM
``input_forget``, other activations, sequence_lens shorter than the sequence or computed at run
time, a sequence length that is not static, and an unrolling over MAX_UNROLLED_NODES nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
import onnx

from fimaudit.autodiff.lowering.core import Lowerer, Refusal, lowering
from fimaudit.graph.onnx_utils import attribute, int_attribute

#: Activations of the ``activations`` attribute that map to an op with gradient rules and no alpha/beta.
ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}

_DIRECTIONS = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}


@dataclass(frozen=True)
class _Cell:
    op: str
    gates: int
    defaults: tuple[str, ...]
    #: Nodes per time step and direction (measured; for the size cap before emitting).
    nodes_per_step: int


_CELLS = {
    "RNN": _Cell("RNN", 1, ("Tanh",), 6),
    "GRU": _Cell("GRU", 3, ("Sigmoid", "Tanh"), 21),
    "LSTM": _Cell("LSTM", 4, ("Sigmoid", "Tanh", "Tanh"), 18),
}


@dataclass
class _Setup:
    cell: _Cell
    hidden: int
    length: int
    layout: int
    reverse: list[bool]
    activations: list[str]
    sequence: str  # X as [S, B, I]


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _setup(low: Lowerer, node: onnx.NodeProto, cell: _Cell) -> _Setup:
    direction = str(attribute(node, "direction", "forward"))
    if direction not in _DIRECTIONS:
        raise Refusal(f"direction {direction!r} is not one of {sorted(_DIRECTIONS)}")
    reverse = _DIRECTIONS[direction]
    if attribute(node, "clip") is not None:
        raise Refusal("the 'clip' attribute (cell clipping) is not lowered")
    if cell.op == "LSTM" and int_attribute(node, "input_forget", 0):
        raise Refusal("'input_forget' (coupled input and forget gates) is not lowered")
    given = attribute(node, "activations")
    activations = (
        [str(name) for name in given] if isinstance(given, list) and given else list(cell.defaults) * len(reverse)
    )
    if len(activations) != len(cell.defaults) * len(reverse):
        raise Refusal(f"'activations' has {len(activations)} entries, not {len(cell.defaults) * len(reverse)}")
    unusual = [name for name in activations if name.lower() not in ACTIVATIONS]
    if unusual:
        raise Refusal(f"activation {unusual[0]!r} is not lowered (lowered: Sigmoid, Tanh, Relu)")
    layout = int_attribute(node, "layout", 0)
    x = node.input[0]
    shape = low.shape(x)
    if shape is None or len(shape) != 3:
        raise Refusal(f"the shape of its input {x!r} is not known statically")
    length = shape[1 if layout else 0]
    if not isinstance(length, int) or length <= 0:
        raise Refusal(f"its sequence length is not static ({length!r} in the shape of {x!r})")
    lens_name = _input(node, 4)
    if lens_name:
        lens = low.value(lens_name)
        if lens is None:
            raise Refusal(
                f"sequence_lens {lens_name!r} is computed at run time (only full-length sequences are unrolled)"
            )
        if np.any(np.asarray(lens) != length):
            raise Refusal(f"sequence_lens {np.asarray(lens).tolist()} are not all the full length {length}")
    hidden = int_attribute(node, "hidden_size")
    if hidden is None:
        r_shape = low.shape(node.input[2])
        inferred = r_shape[-1] if r_shape else None
        if not isinstance(inferred, int):
            raise Refusal("hidden_size is neither given nor known from R's shape")
        hidden = inferred
    per_step = cell.nodes_per_step + (6 if cell.op == "LSTM" and _input(node, 7) else 0)  # peephole Mul/Add
    low.check_size(node, length * len(reverse) * per_step + 30 * len(reverse), f"{cell.op} over {length} steps")
    sequence = low.emit("Transpose", [x], "x_seq_first", perm=[1, 0, 2]) if layout else x
    return _Setup(cell, hidden, length, layout, reverse, [ACTIVATIONS[name.lower()] for name in activations], sequence)


class _Ops:
    """Optional-operand arithmetic: None is a zero tensor (the absent initial state or bias)."""

    def __init__(self, low: Lowerer) -> None:
        self.low = low

    @overload
    def add(self, a: str, b: str | None) -> str: ...
    @overload
    def add(self, a: str | None, b: str) -> str: ...
    @overload
    def add(self, a: str | None, b: str | None) -> str | None: ...
    def add(self, a: str | None, b: str | None) -> str | None:
        if a is None or b is None:
            return a if b is None else b
        return self.low.emit("Add", [a, b], "add")

    def mul(self, a: str | None, b: str | None) -> str | None:
        return None if a is None or b is None else self.low.emit("Mul", [a, b], "mul")

    @overload
    def matmul(self, a: str, b: str) -> str: ...
    @overload
    def matmul(self, a: str | None, b: str) -> str | None: ...
    def matmul(self, a: str | None, b: str) -> str | None:
        return None if a is None else self.low.emit("MatMul", [a, b], "matmul")

    @overload
    def slice(self, a: str, start: int, end: int, axis: int) -> str: ...
    @overload
    def slice(self, a: str | None, start: int, end: int, axis: int) -> str | None: ...
    def slice(self, a: str | None, start: int, end: int, axis: int) -> str | None:
        return None if a is None else self.low.slice(a, start, end, axis)

    def act(self, op: str, a: str) -> str:
        return self.low.emit(op, [a], op.lower())


def _state(low: Lowerer, name: str, direction: int, layout: int) -> str | None:
    """Direction ``direction``'s initial state [B, H] from initial_h/initial_c ([D, B, H] or [B, D, H])."""
    return low.take(name, direction, 1 if layout else 0) if name else None


def _weights(
    low: Lowerer, node: onnx.NodeProto, direction: int, gates: int, hidden: int
) -> tuple[str, str, str | None, str | None]:
    """W^T [I, G*H], R^T [H, G*H], Wb and Rb [G*H] (None without B) of one direction."""
    w_t = low.emit("Transpose", [low.take(node.input[1], direction, 0)], "w_t", perm=[1, 0])
    r_t = low.emit("Transpose", [low.take(node.input[2], direction, 0)], "r_t", perm=[1, 0])
    bias = _input(node, 3)
    if not bias:
        return w_t, r_t, None, None
    b = low.take(bias, direction, 0)
    return w_t, r_t, low.slice(b, 0, gates * hidden, 0), low.slice(b, gates * hidden, 2 * gates * hidden, 0)


def _steps(setup: _Setup, backwards: bool) -> list[int]:
    return list(range(setup.length - 1, -1, -1)) if backwards else list(range(setup.length))


def _last(state: str | None) -> str:
    """The state after the last step: never None, as ``_setup`` refuses a sequence length of 0."""
    if state is None:
        raise Refusal("its sequence has no time step")
    return state


def _rnn_direction(low: Lowerer, node: onnx.NodeProto, setup: _Setup, d: int) -> tuple[dict[int, str], str, str | None]:
    ops, hidden = _Ops(low), setup.hidden
    (f,) = setup.activations[d : d + 1]
    w_t, r_t, wb, rb = _weights(low, node, d, 1, hidden)
    projected = ops.add(low.emit("MatMul", [setup.sequence, w_t], "x_w"), ops.add(wb, rb))
    h = _state(low, _input(node, 5), d, setup.layout)
    outputs: dict[int, str] = {}
    for t in _steps(setup, setup.reverse[d]):
        h = ops.act(f, ops.add(low.take(projected, t, 0), ops.matmul(h, r_t)))
        outputs[t] = h
    return outputs, _last(h), None


def _gru_direction(low: Lowerer, node: onnx.NodeProto, setup: _Setup, d: int) -> tuple[dict[int, str], str, str | None]:
    ops, hidden = _Ops(low), setup.hidden
    f, g = setup.activations[2 * d : 2 * d + 2]
    before_reset = int_attribute(node, "linear_before_reset", 0) != 0
    w_t, r_t, wb, rb = _weights(low, node, d, 3, hidden)
    rb_h = ops.slice(rb, 2 * hidden, 3 * hidden, 0)
    x_bias: str | None
    if before_reset and wb is not None:  # Rbh adds inside r . (...): keep it out of the projection
        x_bias = low.emit(
            "Concat",
            [
                ops.add(ops.slice(wb, 0, 2 * hidden, 0), ops.slice(rb, 0, 2 * hidden, 0)),
                ops.slice(wb, 2 * hidden, 3 * hidden, 0),
            ],
            "x_bias",
            axis=0,
        )
    else:
        x_bias = ops.add(wb, rb)
    projected = ops.add(low.emit("MatMul", [setup.sequence, w_t], "x_w"), x_bias)
    r_t_zr = low.slice(r_t, 0, 2 * hidden, 1)
    r_t_h = low.slice(r_t, 2 * hidden, 3 * hidden, 1)
    h = _state(low, _input(node, 5), d, setup.layout)
    outputs: dict[int, str] = {}
    for t in _steps(setup, setup.reverse[d]):
        r: str | None
        x_t = low.take(projected, t, 0)
        h_zr = ops.matmul(h, r_t_zr)
        z = ops.act(f, ops.add(low.slice(x_t, 0, hidden, 1), ops.slice(h_zr, 0, hidden, 1)))
        x_h = low.slice(x_t, 2 * hidden, 3 * hidden, 1)
        if before_reset:
            inner = ops.add(ops.matmul(h, r_t_h), rb_h)
            r = ops.act(f, ops.add(low.slice(x_t, hidden, 2 * hidden, 1), ops.slice(h_zr, hidden, 2 * hidden, 1)))
            candidate = ops.act(g, ops.add(x_h, ops.mul(r, inner)))
        else:
            r = (
                ops.act(f, ops.add(low.slice(x_t, hidden, 2 * hidden, 1), ops.slice(h_zr, hidden, 2 * hidden, 1)))
                if h
                else None
            )
            candidate = ops.act(g, ops.add(x_h, ops.matmul(ops.mul(r, h), r_t_h)))
        if h is None:
            h = low.emit("Sub", [candidate, low.emit("Mul", [z, candidate], "z_h")], "h")
        else:
            h = low.emit("Add", [candidate, low.emit("Mul", [z, low.emit("Sub", [h, candidate], "dh")], "z_dh")], "h")
        outputs[t] = h
    return outputs, _last(h), None


def _lstm_direction(
    low: Lowerer, node: onnx.NodeProto, setup: _Setup, d: int
) -> tuple[dict[int, str], str, str | None]:
    ops, hidden = _Ops(low), setup.hidden
    f, g, act_h = setup.activations[3 * d : 3 * d + 3]
    w_t, r_t, wb, rb = _weights(low, node, d, 4, hidden)
    projected = ops.add(low.emit("MatMul", [setup.sequence, w_t], "x_w"), ops.add(wb, rb))
    peepholes = _input(node, 7)
    p = low.take(peepholes, d, 0) if peepholes else None
    p_i, p_o, p_f = (ops.slice(p, k * hidden, (k + 1) * hidden, 0) for k in range(3))
    h = _state(low, _input(node, 5), d, setup.layout)
    c = _state(low, _input(node, 6), d, setup.layout)
    outputs: dict[int, str] = {}
    for t in _steps(setup, setup.reverse[d]):
        gates = ops.add(low.take(projected, t, 0), ops.matmul(h, r_t))
        g_i, g_o, g_f, g_c = (low.slice(gates, k * hidden, (k + 1) * hidden, 1) for k in range(4))
        i = ops.act(f, ops.add(g_i, ops.mul(p_i, c)))
        forget = ops.act(f, ops.add(g_f, ops.mul(p_f, c)))
        c = ops.add(ops.mul(forget, c), low.emit("Mul", [i, ops.act(g, g_c)], "i_c"))
        o = ops.act(f, ops.add(g_o, ops.mul(p_o, c)))
        h = low.emit("Mul", [o, ops.act(act_h, c)], "h")
        outputs[t] = h
    return outputs, _last(h), c


_DIRECTION_BUILDERS = {"RNN": _rnn_direction, "GRU": _gru_direction, "LSTM": _lstm_direction}


def _lower_recurrent(low: Lowerer, node: onnx.NodeProto) -> None:
    cell = _CELLS[node.op_type]
    setup = _setup(low, node, cell)
    build = _DIRECTION_BUILDERS[cell.op]
    per_direction = [build(low, node, setup, d) for d in range(len(setup.reverse))]
    y, y_h, y_c = (list(node.output) + ["", "", ""])[:3]
    if y:
        sequences = [
            low.stack([outputs[t] for t in range(setup.length)], 0) for outputs, _, _ in per_direction
        ]  # [S, B, H]
        if setup.layout:
            low.emit("Transpose", [low.stack(sequences, 1)], perm=[2, 0, 1, 3], outputs=[y])
        else:
            low.stack(sequences, 1, y)
    final_states: list[tuple[str, list[str | None]]] = [
        (y_h, [h for _, h, _ in per_direction]),
        (y_c, [c for _, _, c in per_direction]),
    ]
    for target, states in final_states:
        if not target:
            continue
        finals = [name for name in states if name is not None]
        if len(finals) != len(states):
            raise Refusal(f"output {target!r} has no value")
        if setup.layout:
            low.emit("Transpose", [low.stack(finals, 0)], perm=[1, 0, 2], outputs=[target])
        else:
            low.stack(finals, 0, target)


@lowering("RNN")
def lower_rnn(low: Lowerer, node: onnx.NodeProto) -> None:
    """RNN at a static sequence length, unrolled."""
    _lower_recurrent(low, node)


@lowering("GRU")
def lower_gru(low: Lowerer, node: onnx.NodeProto) -> None:
    """GRU at a static sequence length, unrolled (linear_before_reset either way)."""
    _lower_recurrent(low, node)


@lowering("LSTM")
def lower_lstm(low: Lowerer, node: onnx.NodeProto) -> None:
    """LSTM at a static sequence length, unrolled (peepholes optional)."""
    _lower_recurrent(low, node)
