"""Model intake and graph analysis.

Loading (loader.py), description (describe.py), selection of what to differentiate
(selection.py), the ONNX helpers every layer shares (onnx_utils.py) and the read-only graph
view of patterns and bounds (view.py).

The package imports nothing itself, so that a low layer (runtime.py needs onnx_utils.py and
tensor_walk.py) can import one of its modules without loading the rest of graph/.
"""
