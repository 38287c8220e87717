"""One small float64 graph per certify rule (x -> y), for the rule tests against dense sampling.

Every op registered in fimaudit.certify must appear here (test_rules checks it). Inputs are
drawn so that kinks (ReLU at 0, Clip bounds, max-pool ties) are crossed inside the ball.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


@dataclass
class Case:
    name: str
    ops: tuple[str, ...]
    nodes: list[onnx.NodeProto]
    input_shape: tuple[int, ...]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17

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


def n(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], name=f"{op}_node_{'_'.join(outputs or ['y'])}", **attrs)


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _pointwise(op: str, opset: int = 17, **attrs: object) -> Case:
    return Case(op.lower(), (op,), [n(op, ["x"], **attrs)], (1, 12), opset=opset)


CASES: list[Case] = [
    Case("conv", ("Conv",), [n("Conv", ["x", "W", "B"], pads=[1, 0, 1, 2], strides=[2, 1])], (1, 2, 5, 5),
         {"W": w(3, 2, 3, 2), "B": w(3)}),
    Case("conv_groups_dilated", ("Conv",), [n("Conv", ["x", "W"], group=2, dilations=[2, 1], pads=[1, 1, 1, 1])],
         (1, 4, 6, 5), {"W": w(4, 2, 2, 3)}),
    Case("conv_1d", ("Conv",), [n("Conv", ["x", "W"], pads=[1, 1])], (1, 2, 7), {"W": w(3, 2, 3)}),
    Case("gemm", ("Gemm",), [n("Gemm", ["x", "W", "B"], transB=1, alpha=0.7, beta=1.3)], (1, 6),
         {"W": w(4, 6), "B": w(4)}),
    Case("matmul_right", ("MatMul",), [n("MatMul", ["x", "W"])], (1, 3, 5), {"W": w(5, 4)}),
    Case("matmul_left", ("MatMul",), [n("MatMul", ["W", "x"])], (1, 5, 3), {"W": w(4, 5)}),
    Case("batchnorm", ("BatchNormalization",), [n("BatchNormalization", ["x", "g", "b", "m", "v"])], (1, 3, 2, 2),
         {"g": w(3), "b": w(3), "m": w(3), "v": np.abs(w(3)) + 0.1}),
    _pointwise("Relu"),
    _pointwise("LeakyRelu", alpha=0.2),
    Case("clip", ("Clip",), [n("Clip", ["x", "lo", "hi"])], (1, 12), {"lo": np.array(-0.5), "hi": np.array(0.7)}),
    _pointwise("HardSwish", opset=14),
    _pointwise("HardSigmoid", alpha=0.3, beta=0.4),
    _pointwise("Sigmoid"),
    _pointwise("Tanh"),
    _pointwise("Erf"),
    _pointwise("Gelu", opset=20),
    Case("maxpool", ("MaxPool",), [n("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
         (1, 2, 5, 5)),
    Case("averagepool", ("AveragePool",), [n("AveragePool", ["x"], kernel_shape=[2, 3], pads=[0, 1, 1, 1])],
         (1, 2, 4, 4)),
    Case("averagepool_pad", ("AveragePool",),
         [n("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1, strides=[2, 2])],
         (1, 2, 5, 5)),
    Case("globalaveragepool", ("GlobalAveragePool",), [n("GlobalAveragePool", ["x"])], (1, 3, 2, 3)),
    Case("reducemean", ("ReduceMean",), [n("ReduceMean", ["x", "axes"], keepdims=0)], (1, 3, 4), {"axes": i64(2)},
         opset=18),
    Case("add_const", ("Add",), [n("Add", ["x", "c"])], (1, 2, 3), {"c": w(3)}),
    Case("add_two", ("Add", "Relu"), [n("Relu", ["x"], ["r"]), n("Add", ["x", "r"])], (1, 6)),
    Case("sub_two", ("Sub", "Tanh"), [n("Tanh", ["x"], ["t"]), n("Sub", ["t", "x"])], (1, 6)),
    Case("sub_const_left", ("Sub",), [n("Sub", ["c", "x"])], (1, 4), {"c": w(4)}),
    Case("mul_const", ("Mul",), [n("Mul", ["x", "c"])], (1, 2, 3), {"c": w(2, 1)}),
    Case("mul_two", ("Mul", "Tanh"), [n("Tanh", ["x"], ["t"]), n("Mul", ["x", "t"])], (1, 8)),
    Case("div_const", ("Div",), [n("Div", ["x", "c"])], (1, 4), {"c": np.array([2.0, -3.0, 0.5, 4.0])}),
    Case("concat", ("Concat", "Relu"), [n("Relu", ["x"], ["r"]), n("Concat", ["x", "r", "c"], axis=1)], (1, 3),
         {"c": w(1, 2)}),
    Case("reshape", ("Reshape",), [n("Reshape", ["x", "s"])], (1, 2, 6), {"s": i64(1, 3, -1)}),
    Case("flatten", ("Flatten",), [n("Flatten", ["x"], axis=1)], (1, 2, 3)),
    Case("transpose", ("Transpose", "Relu"), [n("Relu", ["x"], ["r"]), n("Transpose", ["r"], perm=[0, 2, 1])],
         (1, 2, 3)),
    Case("squeeze", ("Squeeze",), [n("Squeeze", ["x", "a"])], (1, 1, 4), {"a": i64(1)}),
    Case("unsqueeze", ("Unsqueeze",), [n("Unsqueeze", ["x", "a"])], (1, 4), {"a": i64(2)}),
    Case("identity", ("Identity", "Dropout"), [n("Identity", ["x"], ["i"]), n("Dropout", ["i"])], (1, 4)),
    # torchvision's AdaptiveAvgPool export at its own size: nearest, asymmetric, floor, sizes = input shape
    Case("resize_identity_7x7", ("Resize", "Relu"),
         [n("Relu", ["x"], ["r"]), n("Resize", ["r", "", "", "s"], mode="nearest",
                                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
         (1, 2, 7, 7), {"s": i64(1, 2, 7, 7)}),
    Case("resize_identity_1x1", ("Resize",),
         [n("Resize", ["x", "", "", "s"], mode="nearest", coordinate_transformation_mode="asymmetric",
            nearest_mode="floor")], (1, 3, 1, 1), {"s": i64(1, 3, 1, 1)}),
    Case("resize_up_nearest", ("Resize",),
         [n("Resize", ["x", "", "", "s"], mode="nearest", coordinate_transformation_mode="half_pixel",
            nearest_mode="round_prefer_ceil")], (1, 2, 3, 4), {"s": i64(1, 2, 5, 7)}),
    Case("resize_up_linear", ("Resize", "Tanh"),
         [n("Tanh", ["x"], ["t"]), n("Resize", ["t", "", "sc"], mode="linear",
                                     coordinate_transformation_mode="half_pixel")],
         (1, 2, 3, 4), {"sc": np.array([1.0, 1.0, 2.0, 1.5], dtype=np.float32)}),
    Case("resize_down_linear_corners", ("Resize",),
         [n("Resize", ["x", "", "", "s"], mode="linear", coordinate_transformation_mode="align_corners")],
         (1, 2, 5, 4), {"s": i64(1, 2, 3, 3)}),
]
