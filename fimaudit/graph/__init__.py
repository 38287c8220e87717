"""Model intake: load and validate ONNX files, describe them, choose what to differentiate."""

from fimaudit.graph.loader import LoadedModel, load_model
from fimaudit.graph.describe import ModelDescription, describe_model
from fimaudit.graph.selection import Selection, select_input_output

__all__ = [
    "LoadedModel",
    "load_model",
    "ModelDescription",
    "describe_model",
    "Selection",
    "select_input_output",
]
