"""The vectorised bootstrap of rank correlations against scipy, row by row, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fimaudit.attacks import correlation
from fimaudit.attacks.correlation import bootstrap_coefficients, rank_correlation


@pytest.mark.parametrize("n,limit", [(12, 300), (40, 300), (40, 10)])
def test_bootstrap_coefficients_match_scipy_with_ties(monkeypatch, n, limit) -> None:
    monkeypatch.setattr(correlation, "PAIRWISE_LIMIT", limit)  # both Kendall paths: pairwise and per row
    rng = np.random.default_rng(n)
    x = rng.integers(0, 6, n).astype(float)  # many ties, as bootstrap resamples have
    y = x + rng.normal(scale=2.0, size=n)
    picks = rng.integers(0, n, (50, n))
    table = bootstrap_coefficients(x, y, picks)
    for row, pick in zip(table, picks, strict=True):
        if np.unique(x[pick]).size < 2:
            assert np.isnan(row).all()
            continue
        assert row[0] == pytest.approx(stats.spearmanr(x[pick], y[pick]).statistic, abs=1e-12)
        assert row[1] == pytest.approx(stats.kendalltau(x[pick], y[pick]).statistic, abs=1e-12)


def test_constant_resamples_are_dropped_and_counted() -> None:
    result = rank_correlation([1.0, 1.0, 1.0, 2.0], [0.5, 0.5, 0.5, 0.1], np.random.default_rng(0), resamples=400)
    assert result.spearman == pytest.approx(stats.spearmanr([1, 1, 1, 2], [2, 2, 2, 10]).statistic)
    assert 0 < result.dropped_resamples < 400  # (3/4)^4 of resamples draw only the tied rows
