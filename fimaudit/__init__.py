"""fimaudit: audit exported ONNX classifiers by the spectral norm of their input Fisher information.

The metric is lambda_max(F(x)) with F(x) = J(x)^T (diag(p) - p p^T) J(x), the worst-case curvature
of KL(p(.|x) || p(.|x + d)) ~ 1/2 d^T F d (arXiv 2606.04767).
"""

__version__ = "0.1.0"
