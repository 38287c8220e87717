"""One table of small graphs, one or more per bound rule, with what the test may expect of each.

Every case is a float64 ONNX graph from input ``x`` (batch 1) to output ``y`` whose last
interesting node is the op under test. ``linear`` cases have an exact dense matrix (so the
bound is also checked for tightness against ``factor``); the others are checked against the
largest Jacobian norm found at random and special points (a lower bound on the Lipschitz
constant), and, where the rule reads activations, locally at each point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(20240605)


@dataclass
class Case:
    name: str
    op: str
    nodes: list[onnx.NodeProto]
    input_shape: tuple[int, ...]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    linear: bool = False
    factor: float | None = None
    has_global: bool = True
    positive: bool = False
    points: list[np.ndarray] = field(default_factory=list)
    # "ort" where onnx's reference runtime gets the op wrong (legacy Softmax axis semantics)
    runtime: str = "reference"
    # elementwise graph: its Jacobian is diagonal, read from one pair of evaluations
    pointwise: bool = False
    # False: no bound even at a sample (an output the rule does not cover is used)
    has_local: bool = True

    def model(self) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in self.initializers.items()]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("x", TensorProto.DOUBLE, list(self.input_shape))],
            [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8 if self.opset <= 17 else 10
        return model

    def sample_points(self, count: int = 6) -> list[np.ndarray]:
        points = [p.reshape(self.input_shape) for p in self.points]
        for _ in range(count):
            point = RNG.standard_normal(self.input_shape) * 1.5
            points.append(np.abs(point) + 0.2 if self.positive else point)
        return points


def n(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], **attrs)


def w(*shape: int, scale: float = 1.0) -> np.ndarray:
    return RNG.standard_normal(shape) * scale


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


GRID = np.linspace(-6.0, 6.0, 1201)


def _pointwise(op: str, opset: int = 17, name: str | None = None, special: tuple[float, ...] = (), **attrs: object) -> Case:
    """A pointwise op on a grid holding its steepest points."""
    grid = np.concatenate([GRID, np.array(special, dtype=np.float64)])
    return Case(name or op, op, [n(op, ["x"], **attrs)], (1, grid.size), opset=opset, points=[grid], pointwise=True)


_SQRT2 = math.sqrt(2.0)


def _maxpool_maximiser() -> np.ndarray:
    """A 5x5 image whose centre is the maximum of every 3x3 stride-2 window covering it (4 windows)."""
    image = RNG.random((1, 1, 5, 5)) * 0.1
    image[0, 0, 2, 2] = 5.0
    return image


CASES: list[Case] = [
    # ---------------------------------------------------------------- linear layers
    Case("conv_3x3", "Conv", [n("Conv", ["x", "W"], pads=[1, 1, 1, 1])], (1, 2, 6, 6), {"W": w(3, 2, 3, 3)}, linear=True, factor=2.0),
    Case("conv_strided_dilated", "Conv", [n("Conv", ["x", "W", "b"], strides=[2, 2], dilations=[2, 2], pads=[2, 1, 2, 1])],
         (1, 2, 7, 7), {"W": w(2, 2, 3, 3), "b": w(2)}, linear=True, factor=2.0),
    Case("conv_grouped_1d", "Conv", [n("Conv", ["x", "W"], group=2, strides=[2], pads=[1, 1])], (1, 4, 9), {"W": w(4, 2, 3)}, linear=True, factor=2.0),
    Case("conv_patch_embedding", "Conv", [n("Conv", ["x", "W"], kernel_shape=[2, 2], strides=[2, 2])], (1, 1, 6, 6), {"W": w(4, 1, 2, 2)},
         linear=True, factor=1.0 + 1e-6),
    Case("gemm", "Gemm", [n("Gemm", ["x", "B", "c"], transB=1, alpha=0.7)], (1, 5), {"B": w(4, 5), "c": w(4)}, linear=True, factor=1.0 + 1e-6),
    Case("matmul_weight", "MatMul", [n("MatMul", ["x", "W"])], (1, 3, 4), {"W": w(4, 5)}, linear=True, factor=1.0 + 1e-6),
    Case("matmul_left_weight", "MatMul", [n("MatMul", ["A", "x"])], (1, 4, 3), {"A": w(2, 5, 4)}, linear=True, factor=1.0 + 1e-6),
    Case("batchnorm", "BatchNormalization", [n("BatchNormalization", ["x", "g", "b", "m", "v"], epsilon=1e-3)], (1, 3, 2, 2),
         {"g": w(3), "b": w(3), "m": w(3), "v": np.abs(w(3)) + 0.1}, linear=True, factor=1.0 + 1e-6),
    Case("average_pool", "AveragePool", [n("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], (1, 1, 6, 6),
         linear=True, factor=1.0 + 1e-6),
    Case("average_pool_include_pad_ceil", "AveragePool",
         [n("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1)], (1, 1, 6, 6),
         linear=True),
    Case("global_average_pool", "GlobalAveragePool", [n("GlobalAveragePool", ["x"])], (1, 2, 3, 3), linear=True, factor=1.0 + 1e-6),
    Case("reduce_mean", "ReduceMean", [n("ReduceMean", ["x"], axes=[2, 3])], (1, 2, 3, 3), linear=True, factor=1.0 + 1e-6),
    Case("reduce_mean_18", "ReduceMean", [n("ReduceMean", ["x", "axes"])], (1, 2, 4), {"axes": i64(-1)}, opset=18, linear=True, factor=1.0 + 1e-6),
    Case("reduce_sum", "ReduceSum", [n("ReduceSum", ["x", "axes"], keepdims=0)], (1, 3, 4), {"axes": i64(1)}, opset=13, linear=True, factor=1.0 + 1e-6),
    Case("reshape", "Reshape", [n("Reshape", ["x", "s"])], (1, 2, 6), {"s": i64(1, 3, 4)}, linear=True, factor=1.0 + 1e-6),
    Case("flatten", "Flatten", [n("Flatten", ["x"])], (1, 2, 3), linear=True, factor=1.0 + 1e-6),
    Case("squeeze", "Squeeze", [n("Squeeze", ["x", "a"])], (1, 1, 4), {"a": i64(1)}, linear=True, factor=1.0 + 1e-6),
    Case("unsqueeze", "Unsqueeze", [n("Unsqueeze", ["x", "a"])], (1, 4), {"a": i64(1)}, linear=True, factor=1.0 + 1e-6),
    Case("transpose", "Transpose", [n("Transpose", ["x"], perm=[0, 2, 1])], (1, 2, 3), linear=True, factor=1.0 + 1e-6),
    Case("depth_to_space", "DepthToSpace", [n("DepthToSpace", ["x"], blocksize=2)], (1, 4, 2, 2), linear=True, factor=1.0 + 1e-6),
    Case("space_to_depth", "SpaceToDepth", [n("SpaceToDepth", ["x"], blocksize=2)], (1, 1, 4, 4), linear=True, factor=1.0 + 1e-6),
    Case("slice", "Slice", [n("Slice", ["x", "s", "e"])], (1, 6), {"s": i64(0, 1), "e": i64(1, 4)}, linear=True, factor=1.0 + 1e-6),
    Case("split", "Split", [n("Split", ["x", "parts"], ["y", "unused"], axis=1)], (1, 5), {"parts": i64(2, 3)}, opset=13, linear=True, factor=1.0 + 1e-6),
    Case("gather_repeated", "Gather", [n("Gather", ["x", "i"], axis=1)], (1, 4), {"i": i64(0, 0, 2, -1)}, linear=True, factor=1.0 + 1e-6),
    Case("gather_nd_repeated", "GatherND", [n("GatherND", ["x", "i"], batch_dims=1)], (1, 3, 2), {"i": np.array([[[0], [0], [0], [2]]], dtype=np.int64)},
         linear=True, factor=1.0 + 1e-6),
    Case("concat_copies", "Concat", [n("Relu", ["x"], ["r"]), n("Concat", ["x", "r", "x"], axis=1)], (1, 3), points=[np.array([[1.0, 2.0, 3.0]])]),
    Case("pad", "Pad", [n("Pad", ["x", "p", "v"])], (1, 3), {"p": i64(0, 1, 0, 2), "v": np.array(0.5)}, linear=True, factor=1.0 + 1e-6),
    Case("expand", "Expand", [n("Expand", ["x", "s"])], (1, 1, 3), {"s": i64(1, 4, 3)}, linear=True, factor=1.0 + 1e-6),
    Case("tile", "Tile", [n("Tile", ["x", "r"])], (1, 2, 3), {"r": i64(1, 3, 1)}, linear=True, factor=1.0 + 1e-6),
    Case("dropout", "Dropout", [n("Dropout", ["x"])], (1, 4), linear=True, factor=1.0 + 1e-6),
    Case("cast", "Cast", [n("Cast", ["x"], to=TensorProto.DOUBLE)], (1, 4), linear=True, factor=1.0 + 1e-6),
    Case("identity", "Identity", [n("Identity", ["x"])], (1, 4), linear=True, factor=1.0 + 1e-6),
    Case("neg", "Neg", [n("Neg", ["x"])], (1, 4), linear=True, factor=1.0 + 1e-6),
    Case("add_self_broadcast", "Add", [n("ReduceMean", ["x"], ["m"], axes=[2]), n("Add", ["x", "m"])], (1, 2, 3), linear=True, factor=2.0),
    Case("add_constant", "Add", [n("Add", ["x", "c"])], (1, 3), {"c": w(3)}, linear=True, factor=1.0 + 1e-6),
    Case("sub_residual", "Sub", [n("MatMul", ["x", "W"], ["h"]), n("Sub", ["x", "h"])], (1, 3), {"W": w(3, 3)}, linear=True, factor=5.0),
    Case("sum", "Sum", [n("Sum", ["x", "x", "x"])], (1, 3), linear=True, factor=1.0 + 1e-6),
    Case("mean", "Mean", [n("Neg", ["x"], ["a"]), n("Mean", ["x", "a", "x"])], (1, 3), linear=True, factor=3.0 + 1e-6),
    Case("mul_constant_broadcast", "Mul", [n("Mul", ["x", "c"])], (1, 1, 3), {"c": w(2, 1, 3)}, linear=True, factor=1.0 + 1e-6),
    Case("div_constant", "Div", [n("Div", ["x", "c"])], (1, 3), {"c": np.array([0.5, -2.0, 4.0])}, linear=True, factor=1.0 + 1e-6),
    Case("where_fixed", "Where", [n("Neg", ["x"], ["a"]), n("Where", ["c", "x", "a"])], (1, 4), {"c": np.array([True, False, True, True])},
         linear=True, factor=1.5),
    # ---------------------------------------------------------------- pooling and reductions (nonlinear)
    Case("max_pool_overlapping", "MaxPool", [n("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], (1, 1, 5, 5),
         points=[_maxpool_maximiser()]),
    Case("global_max_pool", "GlobalMaxPool", [n("GlobalMaxPool", ["x"])], (1, 2, 3, 3)),
    Case("reduce_max", "ReduceMax", [n("ReduceMax", ["x"], axes=[2])], (1, 2, 3)),
    Case("reduce_min", "ReduceMin", [n("ReduceMin", ["x"], axes=[1])], (1, 3, 2)),
    Case("reduce_l2", "ReduceL2", [n("ReduceL2", ["x"], axes=[2])], (1, 2, 3)),
    Case("max_two", "Max", [n("Neg", ["x"], ["a"]), n("Max", ["x", "a"])], (1, 4)),
    Case("min_constant", "Min", [n("Min", ["x", "c"])], (1, 4), {"c": np.array(0.3)}),
    # ---------------------------------------------------------------- activations
    _pointwise("Relu"), _pointwise("Abs"),
    _pointwise("LeakyRelu", alpha=0.2), _pointwise("LeakyRelu", name="LeakyRelu_steep", alpha=-1.5),
    _pointwise("Elu", alpha=1.5, special=(-1e-9,)), _pointwise("Selu", special=(-1e-9,)), _pointwise("Celu", opset=12, alpha=0.5),
    _pointwise("Softsign"), _pointwise("Softplus"), _pointwise("Sigmoid"), _pointwise("HardSigmoid", alpha=0.3),
    _pointwise("Tanh"), _pointwise("Erf"), _pointwise("Gelu", opset=20, special=(_SQRT2,)),
    _pointwise("Gelu", opset=20, name="Gelu_tanh", approximate="tanh"),
    _pointwise("HardSwish", opset=14, special=(2.999999,)), _pointwise("Mish", opset=18),
    Case("silu_decomposed", "Silu", [n("Sigmoid", ["x"], ["s"]), n("Mul", ["x", "s"])], (1, GRID.size), points=[GRID], pointwise=True),
    Case("gelu_decomposed", "Gelu", [n("Div", ["x", "r2"], ["d"]), n("Erf", ["d"], ["e"]), n("Add", ["e", "one"], ["a"]),
                                      n("Mul", ["x", "a"], ["m"]), n("Mul", ["m", "half"])],
         (1, GRID.size + 1), {"r2": np.array(_SQRT2), "one": np.array(1.0), "half": np.array(0.5)}, points=[np.append(GRID, _SQRT2)], pointwise=True),
    Case("clip", "Clip", [n("Clip", ["x", "lo", "hi"])], (1, 5), {"lo": np.array(-1.0), "hi": np.array(6.0)}, opset=13),
    Case("prelu", "PRelu", [n("PRelu", ["x", "s"])], (1, 3, 2), {"s": np.array([[0.1], [-2.0], [0.5]])}),
    Case("softmax", "Softmax", [n("Softmax", ["x"], axis=-1)], (1, 2, 4), opset=13, points=[np.array([[[0.0, 0.0, 5.0, 5.0], [1.0, 0.0, -1.0, 3.0]]])]),
    Case("softmax_legacy_axis", "Softmax", [n("Softmax", ["x"], axis=1)], (1, 2, 3), opset=11, runtime="ort"),
    Case("log_softmax", "LogSoftmax", [n("LogSoftmax", ["x"], axis=-1)], (1, 4), opset=13),
    Case("layernorm", "LayerNormalization", [n("LayerNormalization", ["x", "g", "b"], axis=-1, epsilon=1e-3)], (1, 3, 4),
         {"g": w(4), "b": w(4)}, points=[np.array([[[1.0, 1.0, 1.0, 1.001], [0.0, 1.0, 2.0, 3.0], [5.0, -5.0, 0.0, 0.1]]])]),
    Case("layernorm_decomposed", "LayerNormalization",
         [n("ReduceMean", ["x"], ["m"], axes=[-1]), n("Sub", ["x", "m"], ["d"]), n("Pow", ["d", "two"], ["p"]),
          n("ReduceMean", ["p"], ["v"], axes=[-1]), n("Add", ["v", "eps"], ["ve"]), n("Sqrt", ["ve"], ["s"]),
          n("Div", ["d", "s"], ["q"]), n("Mul", ["q", "g"], ["r"]), n("Add", ["r", "b"])],
         (1, 2, 5), {"two": np.array(2.0), "eps": np.array(1e-5), "g": w(5), "b": w(5)}),
    Case("instancenorm", "InstanceNormalization", [n("InstanceNormalization", ["x", "g", "b"], epsilon=1e-2)], (1, 2, 3, 2),
         {"g": w(2), "b": w(2)}),
    # ---------------------------------------------------------------- no global constant: local only
    Case("exp", "Exp", [n("Exp", ["x"])], (1, 5), has_global=False),
    Case("log", "Log", [n("Log", ["x"])], (1, 5), has_global=False, positive=True),
    Case("sqrt", "Sqrt", [n("Sqrt", ["x"])], (1, 5), has_global=False, positive=True),
    Case("reciprocal", "Reciprocal", [n("Reciprocal", ["x"])], (1, 5), has_global=False, positive=True),
    Case("pow_cube", "Pow", [n("Pow", ["x", "p"])], (1, 5), {"p": np.array(3.0)}, has_global=False),
    Case("mul_bilinear", "Mul", [n("Tanh", ["x"], ["t"]), n("Mul", ["x", "t"])], (1, 5), has_global=False),
    Case("div_by_activation", "Div", [n("Exp", ["x"], ["e"]), n("Div", ["x", "e"])], (1, 4), has_global=False),
    Case("matmul_bilinear", "MatMul", [n("Transpose", ["x"], ["t"], perm=[0, 2, 1]), n("MatMul", ["x", "t"])], (1, 3, 2), has_global=False),
    # ---------------------------------------------------------------- bilinear with bounded factors: global from magnitudes
    Case("attention_after_layernorm", "MatMul",
         [n("LayerNormalization", ["x", "g", "b"], ["l"], axis=-1), n("Transpose", ["l"], ["t"], perm=[0, 2, 1]),
          n("MatMul", ["l", "t"], ["s"]), n("Softmax", ["s"], ["p"], axis=-1), n("MatMul", ["p", "l"])],
         (1, 3, 4), {"g": w(4), "b": w(4)}),
    Case("gemm_bilinear", "Gemm", [n("Tanh", ["x"], ["t"]), n("Gemm", ["t", "t"], transB=1)], (1, 4)),
]

CASES += [
    Case("resize_nearest", "Resize", [n("Resize", ["x", "", "", "sizes"], mode="nearest", coordinate_transformation_mode="asymmetric",
                                        nearest_mode="floor")], (1, 1, 2, 3), {"sizes": i64(1, 1, 5, 7)}, opset=13, linear=True, factor=1.0 + 1e-6),
]


def _cancelling_weight() -> np.ndarray:
    """[5, 2 * 49]: each pixel's 49 copies weighted with alternating signs, nearly cancelling on the copies'
    span: the restricted norm is far below the weight's own (adversarial for the Gemm-after-Resize rule)."""
    weight = w(5, 2, 49)
    weight[..., 1::2] = -weight[..., 0:48:2]
    return weight.reshape(5, 98)


# A Gemm fed by a nearest Resize (VGG/AlexNet below 224 x 224): its gain on the copies' span (rules/dense.py).
CASES += [
    Case("gemm_after_resize_copies", "Gemm", [
        n("Resize", ["x", "", "", "sizes"], ["r"], mode="nearest"), n("Flatten", ["r"], ["f"], axis=1),
        n("Gemm", ["f", "wt"], transB=1)], (1, 3, 1, 1), {"sizes": i64(1, 3, 7, 7), "wt": w(5, 147)},
        opset=13, linear=True, factor=1.0 + 1e-6),
    Case("gemm_after_uneven_resize", "Gemm", [
        n("Resize", ["x", "", "", "sizes"], ["r"], mode="nearest", coordinate_transformation_mode="asymmetric",
          nearest_mode="floor"), n("Reshape", ["r", "shape"], ["f"]), n("Gemm", ["f", "wt"])],
        (1, 2, 2, 3), {"sizes": i64(1, 2, 5, 7), "shape": i64(1, 70), "wt": w(70, 4)},
        opset=13, linear=True),  # uneven copies (4 to 9): the Resize's sqrt(9) times the span's gain, not exact
    Case("gemm_after_resize_cancelling", "Gemm", [
        n("Resize", ["x", "", "", "sizes"], ["r"], mode="nearest"), n("Flatten", ["r"], ["f"], axis=1),
        n("Gemm", ["f", "wt"], transB=1)], (1, 2, 1, 1), {"sizes": i64(1, 2, 7, 7), "wt": _cancelling_weight()},
        opset=13, linear=True, factor=1.0 + 1e-6),
]

def _gather_windows(channels: int, side: int, window: int = 1) -> np.ndarray:
    """GatherND indices [1, side, side, window, 3] into a [1, 1, 1, C] tensor: every window picks (0, 0, 0)."""
    return np.zeros((1, side, side, window, 3), dtype=np.int64)


def _adaptive_pool_as_dynamo(channels: int, weight: np.ndarray, window: int = 1) -> list[onnx.NodeProto]:
    """torch.export's 1 x 1 -> 7 x 7 adaptive average pool: Transpose, GatherND, ReduceMean, Transpose."""
    return [
        n("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        n("GatherND", ["t", "idx"], ["g"]),
        n("ReduceMean", ["g"], ["m"], axes=[3], keepdims=0),
        n("Transpose", ["m"], ["u"], perm=[0, 3, 1, 2]),
        n("Reshape", ["u", "shape"], ["f"]),
        n("Gemm", ["f", "wt"], transB=1),
    ]


# The same copies spelled as torch.export spells them (bounds/copies.py follows the chain).
CASES += [
    Case("gemm_after_gathernd_copies", "Gemm", _adaptive_pool_as_dynamo(3, w(5, 147)), (1, 3, 1, 1),
         {"idx": _gather_windows(3, 7), "shape": i64(1, 147), "wt": w(5, 147)}, opset=13, linear=True,
         factor=1.0 + 1e-6),
    Case("gemm_after_gathernd_cancelling", "Gemm", _adaptive_pool_as_dynamo(2, w(5, 98)), (1, 2, 1, 1),
         {"idx": _gather_windows(2, 7), "shape": i64(1, 98), "wt": _cancelling_weight()}, opset=13, linear=True,
         factor=1.0 + 1e-6),
]

# LayerNorm's second output (the mean) read downstream: its rule covers only Y, so no bound.
CASES += [
    Case("layernorm_mean_output_used", "LayerNormalization",
         [n("LayerNormalization", ["x", "g"], ["l", "mean"], axis=-1, epsilon=1e-3), n("Add", ["l", "mean"])], (1, 2, 3),
         {"g": w(3)}, has_global=False, has_local=False),
]
