"""The input Fisher information F(x) = J^T (diag(p) - p p^T) J and estimators of its spectrum."""
