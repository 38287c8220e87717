"""fimaudit: audit exported ONNX classifiers by the spectral norm of their input Fisher information.

The metric is lambda_max(F(x)) with F(x) = J(x)^T (diag(p) - p p^T) J(x), the worst-case curvature
of KL(p(.|x) || p(.|x + d)) ~ 1/2 d^T F d (arXiv 2606.04767).
"""

import os as _os

# Privacy: ONNX Runtime starts its telemetry (a device id and an event database written under the
# user's cache) when its native module is imported, unless this is set first; every fimaudit
# module imports onnxruntime only after this package. See fimaudit/runtime.py.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
