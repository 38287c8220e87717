"""Lowerings of If, Loop and Scan: the taken branch or every iteration's body inlined.

If needs a constant condition, Loop a constant trip count and a constantly true condition, Scan
static lengths; the taken branch or every iteration's body is inlined into the outer graph.

- ``If``: the condition must be known before run time (``Lowerer.value``: an initializer or
  Constant, possibly through Cast/Identity/Not/...); the taken branch is inlined and its outputs
  become the If's outputs (Identity). A run-time condition is refused.
- ``Loop``: ``M`` (the trip count) must be known before run time, the initial condition absent or
  known, and the body's condition output known in every iteration once the iteration number and
  the incoming condition are bound to constants (``Identity(cond_in)`` or a Constant ``true``, as
  exporters write for-loops). A constant ``false`` ends the loop after that iteration, as in the
  spec. Loop-carried values are threaded from one iteration's copy to the next; scan outputs are
  stacked along a new axis 0 (Unsqueeze + Concat). A while-loop (a condition computed from the
  loop-carried values at run time) is refused.
- ``Scan`` (opset 9+): every scan input's length along its axis must be static and equal; each
  iteration binds the slice ``x[t]`` (or ``x[L-1-t]`` for reverse directions, Slice + Squeeze),
  and scan outputs are stacked along ``scan_output_axes`` in iteration order (reversed for
  direction 1, which prepends).
"""

from __future__ import annotations

import numpy as np
import onnx

from fimaudit.autodiff.lowering.core import Lowerer, Refusal, lowering
from fimaudit.graph.onnx_utils import int_attribute, ints_attribute


def _graph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    for attr in node.attribute:
        if attr.name == name and attr.type == onnx.AttributeProto.GRAPH:
            return attr.g
    raise Refusal(f"it has no {name} graph")


def _tag(node: onnx.NodeProto, suffix: str) -> str:
    return f"{node.name or node.op_type.lower()}_{suffix}"


def _truth(value: np.ndarray, what: str) -> bool:
    if np.size(value) != 1:
        raise Refusal(f"{what} has {np.size(value)} elements, not one")
    return bool(np.asarray(value).reshape(-1)[0])


@lowering("If")
def lower_if(low: Lowerer, node: onnx.NodeProto) -> None:
    """If with a condition known before run time: the taken branch, inlined."""
    condition = low.value(node.input[0])
    if condition is None:
        raise Refusal(
            f"its condition {node.input[0]!r} is computed at run time (only a condition known before run time, an "
            "initializer or Constant possibly through Cast/Identity/Not, selects a branch to inline)"
        )
    taken = "then_branch" if _truth(condition, "the condition") else "else_branch"
    branch = _graph(node, taken)
    low.check_size(node, len(branch.node), f"the {taken}")
    outputs = low.inline(branch, {}, _tag(node, taken.split("_")[0]))
    if len(outputs) < len([out for out in node.output if out]):
        raise Refusal(f"its {taken} has {len(outputs)} outputs for {len(node.output)} If outputs")
    for source, target in zip(outputs, node.output, strict=False):  # a branch may have more outputs
        if target:
            low.identity(source, target)


@lowering("Loop")
def lower_loop(low: Lowerer, node: onnx.NodeProto) -> None:
    """Loop with a trip count known before run time and a condition that stays true: unrolled."""
    body = _graph(node, "body")
    trip_name = node.input[0] if len(node.input) > 0 else ""
    cond_name = node.input[1] if len(node.input) > 1 else ""
    states = list(node.input[2:])
    if not trip_name:
        raise Refusal(
            "it has no trip count M (a while-loop; only loops with a trip count known before run time are unrolled)"
        )
    trips_value = low.value(trip_name)
    if trips_value is None:
        raise Refusal(
            f"its trip count {trip_name!r} is computed at run time "
            "(only a trip count known before run time is unrolled)"
        )
    trips = int(np.asarray(trips_value).reshape(-1)[0])
    if cond_name:
        initial = low.value(cond_name)
        if initial is None:
            raise Refusal(f"its initial condition {cond_name!r} is computed at run time")
        if not _truth(initial, "the initial condition"):
            trips = 0
    carried = len(states)
    scanned = len(body.output) - 1 - carried
    if len(body.input) != 2 + carried or scanned < 0:
        raise Refusal(
            f"its body has {len(body.input)} inputs and {len(body.output)} outputs for {carried} loop-carried values"
        )
    if trips <= 0 and scanned:
        raise Refusal("it runs zero iterations and has scan outputs (empty tensors of unknown shape)")
    low.check_size(node, trips * (len(body.node) + 2 * scanned + 4) + scanned, f"the Loop over {trips} iterations")
    true = low.constant(np.array(True), "loop_cond")
    current = states
    collected: list[list[str]] = [[] for _ in range(scanned)]
    for iteration in range(max(trips, 0)):
        bindings = {
            body.input[0].name: low.constant(np.array(iteration, dtype=np.int64), "loop_iter"),
            body.input[1].name: true,
        }
        bindings.update({value.name: outer for value, outer in zip(body.input[2:], current, strict=True) if value.name})
        outputs = low.inline(body, bindings, _tag(node, f"it{iteration}"))
        flag = low.value(outputs[0])
        if flag is None:
            raise Refusal(
                f"its body's condition output {body.output[0].name!r} is computed at run time (a loop that can stop "
                "early; only a condition that stays constant is unrolled)"
            )
        current = outputs[1 : 1 + carried]
        for k, name in enumerate(outputs[1 + carried :]):
            collected[k].append(name)
        if not _truth(flag, "the body's condition output"):
            break
    # The node may name fewer outputs than the body yields (trailing outputs omitted).
    for source, target in zip(current, node.output[:carried], strict=False):
        if target:
            low.identity(source, target)
    for parts, target in zip(collected, node.output[carried:], strict=False):
        if target:
            low.stack(parts, 0, target)


@lowering("Scan")
def lower_scan(low: Lowerer, node: onnx.NodeProto) -> None:
    """Scan with static lengths: unrolled over the scan axis."""
    if low.opset < 9:
        raise Refusal("Scan before opset 9 (batched, with sequence_lens) is not unrolled")
    body = _graph(node, "body")
    count = int_attribute(node, "num_scan_inputs", 0)
    carried = len(node.input) - count
    scanned_out = len(body.output) - carried
    if count <= 0 or carried < 0 or scanned_out < 0 or len(body.input) != len(node.input):
        raise Refusal("its body does not match its inputs (num_scan_inputs)")
    in_axes = ints_attribute(node, "scan_input_axes", [0] * count, length=count)
    in_dirs = ints_attribute(node, "scan_input_directions", [0] * count, length=count)
    out_axes = ints_attribute(node, "scan_output_axes", [0] * scanned_out, length=scanned_out)
    out_dirs = ints_attribute(node, "scan_output_directions", [0] * scanned_out, length=scanned_out)
    scan_inputs = list(node.input[carried:])
    lengths: set[int] = set()
    axes: list[int] = []
    for name, axis in zip(scan_inputs, in_axes, strict=True):
        shape = low.shape(name)
        if shape is None:
            raise Refusal(f"the shape of its scan input {name!r} is not known statically")
        axis = axis + len(shape) if axis < 0 else axis
        length = shape[axis] if 0 <= axis < len(shape) else None
        if not isinstance(length, int):
            raise Refusal(f"the length of its scan input {name!r} along axis {axis} is not static ({length!r})")
        lengths.add(length)
        axes.append(axis)
    if len(lengths) != 1:
        raise Refusal(f"its scan inputs have different lengths {sorted(lengths)}")
    (length,) = lengths
    if length <= 0:
        raise Refusal("its scan inputs are empty")
    low.check_size(
        node, length * (len(body.node) + 2 * count + 2 * scanned_out) + scanned_out, f"the Scan over {length} steps"
    )
    current = list(node.input[:carried])
    collected: list[list[str]] = [[] for _ in range(scanned_out)]
    for step in range(length):
        bindings = {value.name: outer for value, outer in zip(body.input[:carried], current, strict=True)}
        for value, name, axis, direction in zip(body.input[carried:], scan_inputs, axes, in_dirs, strict=True):
            bindings[value.name] = low.take(name, step if not direction else length - 1 - step, axis)
        outputs = low.inline(body, bindings, _tag(node, f"step{step}"))
        current = outputs[:carried]
        for k, name in enumerate(outputs[carried:]):
            collected[k].append(name)
    # The node may name fewer outputs than the body yields (trailing outputs omitted).
    for source, target in zip(current, node.output[:carried], strict=False):
        if target:
            low.identity(source, target)
    for parts, axis, direction, target in zip(collected, out_axes, out_dirs, node.output[carried:], strict=False):
        if target:
            low.stack(parts[::-1] if direction else parts, axis, target)


__all__ = ["lower_if", "lower_loop", "lower_scan"]
