"""Small models with control flow and recurrent ops, for the lowering tests (test_lowering.py).

Each builder returns a model at a float type with input ``x`` and a differentiable output ``y``
(every output of the construct, flattened and concatenated, so one Jacobian covers them all),
plus the construct's own outputs as extra graph outputs for the forward comparison.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, x_shape, outputs, initializers, elem, opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "lowering_case",
        [helper.make_tensor_value_info("x", elem, list(x_shape))],
        [helper.make_tensor_value_info(name, elem, None) for name in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _flat_concat(names: list[str], target: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [helper.make_node("Reshape", [name, "flat_shape"], [f"{name}_flat"]) for name in names]
    nodes.append(helper.make_node("Concat", [f"{name}_flat" for name in names], [target], axis=0))
    return nodes, [numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape")]


def _init(name: str, value: np.ndarray, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value).astype(dtype), name)


def recurrent(
    op: str,
    dtype=np.float64,
    direction: str = "forward",
    layout: int = 0,
    bias: bool = True,
    initial: bool = True,
    peepholes: bool = False,
    linear_before_reset: int = 0,
    activations: list[str] | None = None,
    seq: int = 4,
    batch: int = 2,
    features: int = 3,
    hidden: int = 5,
    seed: int = 0,
    **extra: object,
) -> onnx.ModelProto:
    """One LSTM/GRU/RNN node with random weights (scaled so the gates are not saturated); y is
    Y, Y_h (and Y_c) flattened and concatenated."""
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if direction == "bidirectional" else 1
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [
        _init("W", rng.normal(scale=0.6, size=(dirs, gates * hidden, features)), dtype),
        _init("R", rng.normal(scale=0.4, size=(dirs, gates * hidden, hidden)), dtype),
    ]
    inputs = ["x", "W", "R", "", "", ""]
    if bias:
        inits.append(_init("B", rng.normal(scale=0.3, size=(dirs, 2 * gates * hidden)), dtype))
        inputs[3] = "B"
    state_shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    if initial:
        inits.append(_init("H0", rng.normal(scale=0.5, size=state_shape), dtype))
        inputs[5] = "H0"
    outputs = ["Y", "Y_h"]
    if op == "LSTM":
        inputs += ["", ""]
        if initial:
            inits.append(_init("C0", rng.normal(scale=0.5, size=state_shape), dtype))
            inputs[6] = "C0"
        if peepholes:
            inits.append(_init("P", rng.normal(scale=0.5, size=(dirs, 3 * hidden)), dtype))
            inputs[7] = "P"
        outputs.append("Y_c")
    while inputs and not inputs[-1]:
        inputs.pop()
    attributes: dict[str, object] = {"hidden_size": hidden, "direction": direction, **extra}
    if layout:
        attributes["layout"] = layout
    if op == "GRU" and linear_before_reset:
        attributes["linear_before_reset"] = linear_before_reset
    if activations:
        attributes["activations"] = activations
    nodes = [helper.make_node(op, inputs, outputs, name=f"the_{op.lower()}", **attributes)]
    flat, flat_inits = _flat_concat(outputs, "y")
    x_shape = (batch, seq, features) if layout else (seq, batch, features)
    return _model(nodes + flat, x_shape, ["y", *outputs], inits + flat_inits, elem)


def _branch(name: str, nodes, output: str, elem: int, initializers=()) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, elem, None)], list(initializers))


def if_constant(value: bool, dtype=np.float64, through: str = "Not", runtime: bool = False) -> onnx.ModelProto:
    """If on a constant condition (through Cast and ``through``: Not or Identity); branches read
    the outer x and an outer weight, the then-branch has its own initializer. ``runtime``: the
    condition is computed from x instead (refused)."""
    rng = np.random.default_rng(3)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    then_branch = _branch(
        "then",
        [helper.make_node("Mul", ["x", "scale"], ["t0"]), helper.make_node("Tanh", ["t0"], ["t1"]), helper.make_node("MatMul", ["t1", "w"], ["t_out"])],
        "t_out",
        elem,
        [_init("scale", rng.normal(size=(3,)), dtype)],
    )
    else_branch = _branch(
        "else",
        [helper.make_node("MatMul", ["x", "w"], ["e0"]), helper.make_node("Sigmoid", ["e0"], ["e_out"])],
        "e_out",
        elem,
    )
    stored = not value if through == "Not" else value
    if runtime:
        condition = [
            helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
            helper.make_node("Greater", ["sum", "zero"], ["cond"]),
        ]
        inits = [_init("zero", np.array(0.0), dtype)]
    else:
        condition = [
            helper.make_node("Constant", [], ["c_int"], value=helper.make_tensor("c", TensorProto.INT64, [], [int(stored)])),
            helper.make_node("Cast", ["c_int"], ["c_bool"], to=TensorProto.BOOL),
            helper.make_node(through, ["c_bool"], ["cond"]),
        ]
        inits = []
    nodes = condition + [
        helper.make_node("If", ["cond"], ["branch_out"], name="the_if", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Mul", ["branch_out", "branch_out"], ["y"]),
    ]
    inits += [_init("w", rng.normal(size=(3, 4)), dtype)]
    return _model(nodes, (2, 3), ["y", "branch_out"], inits, elem)


def loop(dtype=np.float64, trips: int = 3, runtime_trips: bool = False, while_condition: bool = False, nested_if: bool = True) -> onnx.ModelProto:
    """Loop with a constant trip count: a loop-carried v (starting at x), a scan output per
    iteration, and (``nested_if``) an If on ``iteration == 1`` inside the body. ``runtime_trips``:
    the trip count is computed from x's values; ``while_condition``: the body's condition is
    computed from v (both refused)."""
    rng = np.random.default_rng(4)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    body_nodes = [
        helper.make_node("MatMul", ["v_in", "w"], ["mm"]),
        helper.make_node("Cast", ["i"], ["i_f"], to=elem),
        helper.make_node("Mul", ["i_f", "step"], ["shift"]),
        helper.make_node("Add", ["mm", "shift"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["v_mid"]),
    ]
    if nested_if:
        body_nodes += [
            helper.make_node("Equal", ["i", "one"], ["is_one"]),
            helper.make_node(
                "If",
                ["is_one"],
                ["v_out"],
                then_branch=_branch("then", [helper.make_node("Sigmoid", ["v_mid"], ["s_then"])], "s_then", elem),
                else_branch=_branch("else", [helper.make_node("Mul", ["v_mid", "v_in"], ["s_else"])], "s_else", elem),
            ),
        ]
    else:
        body_nodes.append(helper.make_node("Identity", ["v_mid"], ["v_out"]))
    if while_condition:
        body_nodes += [helper.make_node("ReduceSum", ["v_out"], ["total"], keepdims=0), helper.make_node("Less", ["total", "big"], ["c_out"])]
    else:
        body_nodes.append(helper.make_node("Identity", ["c_in"], ["c_out"]))
    body_nodes.append(helper.make_node("Sigmoid", ["v_out"], ["scan_out"]))
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", elem, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", elem, [2, 3]),
            helper.make_tensor_value_info("scan_out", elem, [2, 3]),
        ],
    )
    inits = [
        _init("w", rng.normal(scale=0.7, size=(3, 3)), dtype),
        _init("step", np.array(0.1), dtype),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        _init("big", np.array(1e9), dtype),
    ]
    nodes = []
    if runtime_trips:
        nodes += [
            helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
            helper.make_node("Abs", ["mx"], ["amx"]),
            helper.make_node("Cast", ["amx"], ["trips"], to=TensorProto.INT64),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array(trips, dtype=np.int64), "trips"))
    nodes.append(helper.make_node("Loop", ["trips", "", "x"], ["v_final", "scans"], name="the_loop", body=body))
    flat, flat_inits = _flat_concat(["v_final", "scans"], "y")
    return _model(nodes + flat, (2, 3), ["y", "v_final", "scans"], inits + flat_inits, elem)


def scan(dtype=np.float64, seq: int = 4) -> onnx.ModelProto:
    """Scan over axis 1 of x [2, seq, 3], read forwards and backwards; a state s [2, 3]; scan
    outputs stacked along axis 0 (forward) and axis 1 (reverse, prepended)."""
    rng = np.random.default_rng(6)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["s_in", "w"], ["sw"]),
            helper.make_node("Add", ["sw", "e_fwd"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["s_out"]),
            helper.make_node("Mul", ["s_out", "e_bwd"], ["o1"]),
            helper.make_node("Sigmoid", ["e_fwd"], ["o2"]),
        ],
        "scan_body",
        [helper.make_tensor_value_info(name, elem, [2, 3]) for name in ("s_in", "e_fwd", "e_bwd")],
        [helper.make_tensor_value_info(name, elem, None) for name in ("s_out", "o1", "o2")],
    )
    nodes = [
        helper.make_node(
            "Scan",
            ["s0", "x", "x"],
            ["s_final", "out1", "out2"],
            name="the_scan",
            body=body,
            num_scan_inputs=2,
            scan_input_axes=[1, 1],
            scan_input_directions=[0, 1],
            scan_output_axes=[0, 1],
            scan_output_directions=[0, 1],
        )
    ]
    inits = [_init("s0", rng.normal(size=(2, 3)), dtype), _init("w", rng.normal(size=(3,)), dtype)]
    flat, flat_inits = _flat_concat(["s_final", "out1", "out2"], "y")
    return _model(nodes + flat, (2, seq, 3), ["y", "s_final", "out1", "out2"], inits + flat_inits, elem)


def lstm_classifier(dtype=np.float32, seq: int = 5, features: int = 4, hidden: int = 8, classes: int = 3, seed: int = 11) -> onnx.ModelProto:
    """x [N, seq, features] -> Transpose -> LSTM (layout 0) -> last Y_h -> Gemm -> logits [N, classes],
    the form torch.onnx exports for nn.LSTM + nn.Linear."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2]),
            helper.make_node("LSTM", ["x_t", "W", "R", "B"], ["", "Y_h"], name="lstm", hidden_size=hidden),
            helper.make_node("Squeeze", ["Y_h", "axis0"], ["h_last"]),
            helper.make_node("Gemm", ["h_last", "head_w", "head_b"], ["logits"], transB=1),
        ],
        "lstm_classifier",
        [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), ["N", seq, features])],
        [helper.make_tensor_value_info("logits", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), ["N", classes])],
        [
            _init("W", rng.normal(scale=0.5, size=(1, 4 * hidden, features)), dtype),
            _init("R", rng.normal(scale=0.4, size=(1, 4 * hidden, hidden)), dtype),
            _init("B", rng.normal(scale=0.2, size=(1, 8 * hidden)), dtype),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
            _init("head_w", rng.normal(size=(classes, hidden)), dtype),
            _init("head_b", rng.normal(scale=0.1, size=(classes,)), dtype),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model
