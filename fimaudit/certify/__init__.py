"""Local Fisher certificates: B(x, eps) >= lambda_max(F(x')) for every x' in an eps-ball around x.

Forward interval propagation (one rule per ONNX op, ``registry``), an interval Jacobian backward
(``propagate``), the composition into B (``composition``), the certified radius (``radius``) and
the audit stage (``stage``). The derivation is in docs/CERTIFICATES.md.
"""
