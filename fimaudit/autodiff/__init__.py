"""Gradient graphs derived from an ONNX graph: VJP/JVP rules per op (``registry``), the builder, the lowerings."""
