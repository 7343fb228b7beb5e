"""The WoE scorecard: WoE by its definition, points that add up to the score,
and the PDO convention."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pitstore.training.credit_scorecard import BASE_ODDS, BASE_SCORE, PDO, fit_scorecard


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(0, 1, n)
    z = rng.integers(0, 2, n).astype(float)
    z[rng.random(n) < 0.1] = np.nan
    p = 1 / (1 + np.exp(-(-1.5 + 0.9 * x + 0.6 * np.nan_to_num(z))))
    return pd.DataFrame({"x": x, "z": z, "defaulted": rng.random(n) < p})


def test_woe_is_its_definition(data: pd.DataFrame) -> None:
    card = fit_scorecard(data, ["x", "z"])
    y = data["defaulted"].astype(int).to_numpy()
    bins = card.bins("z", data["z"].to_numpy())
    n_bins = len(card.edges["z"]) + 2
    assert sorted(set(bins)) == [0, 1, n_bins - 1]  # z = 0, z = 1, missing
    goods, bads = (y == 0).sum() + 0.5 * n_bins, (y == 1).sum() + 0.5 * n_bins
    for b in range(n_bins):
        g = ((bins == b) & (y == 0)).sum() + 0.5
        d = ((bins == b) & (y == 1)).sum() + 0.5
        expected = math.log((g / goods) / (d / bads)) if (bins == b).any() else 0.0
        assert card.woe["z"][b] == pytest.approx(expected)
    # More x, more defaults: the top bin's WoE is the lowest.
    assert card.woe["x"][len(card.edges["x"])] < card.woe["x"][0]
    assert card.information_value["x"] > card.information_value["z"] > 0


def test_points_add_up_and_follow_pdo(data: pd.DataFrame) -> None:
    card = fit_scorecard(data, ["x", "z"])
    table = pd.DataFrame(card.points())
    rows = data.head(50)
    score = card.score(rows)
    for i, (_, row) in enumerate(rows.iterrows()):
        total = 0.0
        for col in card.columns:
            b = int(card.bins(col, np.array([row[col]], dtype=float))[0])
            total += table[table["input"] == col]["points"].to_numpy()[b]
        assert total == pytest.approx(score[i])
    pd_ = card.pd(rows)
    odds_good = (1 - pd_) / pd_
    # BASE_SCORE at BASE_ODDS, and every PDO points double the odds.
    expected = BASE_SCORE + PDO * np.log2(odds_good / BASE_ODDS)
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-9)
