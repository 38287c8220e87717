"""Ops with no gradient rule on purpose: zero-gradient and not-differentiable markers.

Zero gradient: shape arithmetic and integer/boolean-valued ops. Their outputs are off the
differentiable path anyway (the builder decides that by dependency through float tensors), the
markers make the intent explicit and let preflight list them as handled.

Not differentiable: quantized integer arithmetic. A DequantizeLinear of a *weight* is not on the
path (it does not depend on the input) and is harmless; a quantized *activation* path
(QuantizeLinear of something computed from the input) cannot be differentiated, and preflight
names it.
"""

from fimaudit.autodiff.registry import not_differentiable, zero_gradient

zero_gradient(
    "Shape", "Size", "ConstantOfShape", "NonZero", "ArgMax", "ArgMin",
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "BitShift", "Range", "OneHot",
)

not_differentiable(
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
)
not_differentiable(
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax", "QGemm", "DynamicQuantizeMatMul",
    domain="com.microsoft",
)
