"""A scorecard beside the PD model: logistic regression on weight-of-evidence
(WoE) bins, turned into a points table.

Each input is cut into at most ``MAX_BINS`` quantile bins on the training rows
(plus one bin for NaN); a bin's WoE is ``ln(share of goods / share of bads)``
(0.5 added to each count, so an empty cell stays finite); the logistic
regression of default on the WoE values gives a coefficient per input.

Points follow the "points to double the odds" (PDO) convention: a score of
``BASE_SCORE`` means good:bad odds of ``BASE_ODDS``, and every ``PDO`` points
double the odds of being good::

    factor = PDO / ln 2
    offset = BASE_SCORE - factor * ln(BASE_ODDS)
    score  = offset + factor * ln(odds good) = offset - factor * logit(PD)

The intercept is shared equally among the inputs, so each bin's points are
``-factor * (beta_j * WoE_bin + alpha / k) + offset / k`` and an applicant's
score is the sum of their bins' points: readable, additive, and the same
ranking as the logistic PD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

MAX_BINS = 5
PDO = 20.0
BASE_SCORE = 600.0
BASE_ODDS = 50.0  # good:bad
FACTOR = PDO / math.log(2)
OFFSET = BASE_SCORE - FACTOR * math.log(BASE_ODDS)


@dataclass
class Scorecard:
    columns: list[str]
    edges: dict[str, np.ndarray]  # inner cut points per input
    woe: dict[str, np.ndarray]  # per bin: the quantile bins, then the NaN bin
    information_value: dict[str, float]
    intercept: float
    coefficients: dict[str, float]

    def bins(self, col: str, values: np.ndarray) -> np.ndarray:
        """Bin index per value: i for edges[i-1] < v <= edges[i] (0..len(edges)),
        the last bin for NaN."""
        idx = np.searchsorted(self.edges[col], values, side="left")
        return np.where(np.isnan(values), len(self.edges[col]) + 1, idx)

    def woe_frame(self, frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for c in self.columns:
            cols.append(self.woe[c][self.bins(c, frame[c].to_numpy(dtype=np.float64))])
        return np.column_stack(cols)

    def points(self) -> list[dict[str, Any]]:
        """The points table: one row per input and bin."""
        k = len(self.columns)
        rows = []
        for c in self.columns:
            edges = [-math.inf, *self.edges[c].tolist(), math.inf]
            labels = [f"({lo:g}, {hi:g}]" for lo, hi in zip(edges, edges[1:], strict=False)]
            for label, w in zip([*labels, "missing"], self.woe[c], strict=True):
                pts = -FACTOR * (self.coefficients[c] * w + self.intercept / k) + OFFSET / k
                rows.append({"input": c, "bin": label, "woe": float(w), "points": float(pts)})
        return rows

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Total points per row (higher = safer)."""
        eta = self.intercept + self.woe_frame(frame) @ np.array(
            [self.coefficients[c] for c in self.columns]
        )
        return OFFSET - FACTOR * eta

    def pd(self, frame: pd.DataFrame) -> np.ndarray:
        """The logistic regression's PD per row."""
        return 1.0 / (1.0 + np.exp((self.score(frame) - OFFSET) / FACTOR))


def _woe(y: np.ndarray, bins: np.ndarray, n_bins: int) -> tuple[np.ndarray, float]:
    bad = np.bincount(bins, weights=y, minlength=n_bins) + 0.5
    good = np.bincount(bins, weights=1 - y, minlength=n_bins) + 0.5
    share_good, share_bad = good / good.sum(), bad / bad.sum()
    # A bin no training row fell in (often: missing) is neutral, not a prior.
    empty = np.bincount(bins, minlength=n_bins) == 0
    woe = np.where(empty, 0.0, np.log(share_good / share_bad))
    return woe, float(((share_good - share_bad) * woe).sum())


def fit_scorecard(
    train: pd.DataFrame, columns: Sequence[str], target: str = "defaulted"
) -> Scorecard:
    y = train[target].astype(int).to_numpy()
    edges: dict[str, np.ndarray] = {}
    woe: dict[str, np.ndarray] = {}
    iv: dict[str, float] = {}
    card = Scorecard(list(columns), edges, woe, iv, 0.0, {})
    for c in columns:
        values = train[c].to_numpy(dtype=np.float64)
        finite = values[~np.isnan(values)]
        qs = np.quantile(finite, np.linspace(0, 1, MAX_BINS + 1)[1:-1]) if len(finite) else []
        edges[c] = np.unique(np.asarray(qs, dtype=np.float64))
        woe[c], iv[c] = _woe(y, card.bins(c, values), len(edges[c]) + 2)
    lr = LogisticRegression(C=1e6, max_iter=5000).fit(card.woe_frame(train), y)
    card.intercept = float(lr.intercept_[0])
    card.coefficients = {c: float(b) for c, b in zip(columns, lr.coef_[0], strict=True)}
    return card
