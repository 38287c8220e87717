"""Attacks as a cross-check of lambda_max: minimum-norm attacks, PGD, the quadratic regime, rank correlation.

- ``result.py``: the norms; re-exports ``AttackResult`` (frozen, in fimaudit/results.py with the
  other results: only what a forward run confirmed);
- ``forward.py``: ``Forward`` (cast, clip, padded ``runner.run``) and ``verify``;
- ``deepfool.py``: DeepFool in l2 / l-inf over a gradient source, then a bisection along the ray;
- ``pgd.py``: PGD success at fixed radii with random restarts and a step schedule;
- ``quadratic.py``: KL along the top eigenvector against 1/2 t^2 lambda_max;
- ``correlation.py``: Spearman and Kendall between lambda_max and 1 / epsilon_min with bootstrap intervals;
- ``stage.py``: ``attack_stage``, the one call ``audit.run_audit`` makes after its per-sample loop
  (``--attack``; ``fimaudit attack`` is that audit without bounds).
"""

from __future__ import annotations

from fimaudit.attacks.correlation import rank_correlation
from fimaudit.attacks.deepfool import deepfool, refine_along_ray
from fimaudit.attacks.forward import Forward, InputRange
from fimaudit.attacks.pgd import pgd_at_radii, success_rates
from fimaudit.attacks.quadratic import kl_divergence, quadratic_regime
from fimaudit.attacks.result import AttackResult, Norm, norm_name, perturbation_norm
from fimaudit.results import PgdOutcome, QuadraticCheck, RankCorrelation

__all__ = [
    "AttackResult",
    "Forward",
    "InputRange",
    "Norm",
    "PgdOutcome",
    "QuadraticCheck",
    "RankCorrelation",
    "deepfool",
    "kl_divergence",
    "norm_name",
    "perturbation_norm",
    "pgd_at_radii",
    "quadratic_regime",
    "rank_correlation",
    "refine_along_ray",
    "success_rates",
]
