"""Gradient graphs derived from an ONNX graph: one VJP/JVP rule per op (see ``registry``), the builder, the lowerings."""
