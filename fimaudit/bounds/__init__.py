"""Certified analytic bounds on lambda_max(F(x)) from the weights (issue 5).

- registry.py: ``@layer_bound("Conv")`` rules, one per op, giving certified Lipschitz gains;
  rules/ holds them by op family (conv, dense, normalization, activations, pooling, structure,
  elementwise); folding.py folds BatchNorm scales into neighbouring weights first.
- compose.py: the walk composing gains along the graph (chain products, residual sums,
  concatenations in l2), globally or at one sample's activations (probe.py reads them).
- head.py, fisher_bound.py: from the Lipschitz constant to lambda_max(F) via the softmax
  covariance, and the JSON the audit reports (``bound`` and ``samples[].bound``).

What "certified" means here: an upper bound in exact arithmetic on the model's stored (float32)
weights; computed norms carry a relative safety margin for floating-point error
(linalg.RELATIVE_MARGIN), per-sample gains one for float32 activations (compose.LOCAL_MARGIN).
The global bound assumes no input domain; products of two activations (attention, gates) are
bounded through activation magnitudes, finite behind a LayerNorm, else the global bound is null
with the reason. An op with no rule makes the bound null, never smaller.
"""
