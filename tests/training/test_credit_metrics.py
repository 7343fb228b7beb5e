"""PD validation metrics against independent computations, and the intervals'
coverage on simulated well-calibrated data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logit
from scipy.stats import binomtest, ks_2samp, mannwhitneyu
from sklearn.linear_model import LogisticRegression

from pitstore.training.credit_cutoffs import Economics, choose_cutoffs
from pitstore.training.credit_metrics import (
    PD_BANDS,
    age_band,
    band_index,
    income_band,
    pd_metrics,
    wilson_interval,
)


def random_scores(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 6, n)
    y = (rng.random(n) < np.clip(p * 1.3, 0, 1)).astype(int)  # not calibrated on purpose
    return y, np.round(p, 3)  # rounding makes ties, which KS and AUC must handle


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discrimination_equals_scipy(seed: int) -> None:
    y, p = random_scores(seed)
    m = pd_metrics(y, p)
    u = mannwhitneyu(p[y == 1], p[y == 0]).statistic
    auc = u / ((y == 1).sum() * (y == 0).sum())
    assert m["auc"] == pytest.approx(auc, abs=1e-12)
    assert m["gini"] == pytest.approx(2 * auc - 1, abs=1e-12)
    assert m["ks"] == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic, abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    # Average precision by its definition: precision at each positive, ties as one step.
    thresholds = np.unique(p)[::-1]
    ap, prev_recall = 0.0, 0.0
    for t in thresholds:
        flagged = p >= t
        tp = (flagged & (y == 1)).sum()
        recall = tp / y.sum()
        ap += (recall - prev_recall) * tp / flagged.sum()
        prev_recall = recall
    assert m["pr_auc"] == pytest.approx(ap, abs=1e-12)


def test_wilson_equals_scipy() -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 400), (250, 1000)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_calibration_slope_equals_an_unpenalised_logistic_fit() -> None:
    y, p = random_scores(5)
    m = pd_metrics(y, p)
    x = logit(np.clip(p, 1e-12, 1 - 1e-12)).reshape(-1, 1)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    assert m["calibration_slope"] == pytest.approx(ref.coef_[0][0], abs=1e-5)
    assert m["calibration_intercept"] == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_bands_and_segments() -> None:
    y, p = random_scores(7)
    m = pd_metrics(y, p, {"age_band": age_band(np.full(len(y), 40.0))})
    table = m["calibration_by_band"]
    assert sum(r["n"] for r in table) == len(y)
    assert sum(r["defaults"] for r in table) == y.sum()
    idx = band_index(np.array([0.0, 0.02, 0.0200001, 0.5, 1.0]))
    assert idx.tolist() == [0, 0, 1, 5, len(PD_BANDS) - 2]
    assert m["by_segment"]["age_band"]["35-49"]["n"] == len(y)
    assert age_band(np.array([17, 18, 24, 25, 64, 65, np.nan])).tolist() == [
        "unknown", "18-24", "18-24", "25-34", "50-64", "65+", "unknown",
    ]  # fmt: skip
    assert income_band(np.array([0, 1_999_999, 2_000_000, 9_000_000])).tolist() == [
        "<20k", "<20k", "20k-35k", "80k+",
    ]  # fmt: skip
    one_class = pd_metrics(np.zeros(10, dtype=int), np.full(10, 0.1))
    assert one_class["auc"] is None and one_class["calibration_slope"] is None


def test_intervals_cover_the_truth_on_calibrated_data() -> None:
    """PD = the true default probability: the observed rate's 95% interval holds
    the mean PD (the truth) for the whole set and for each band in most trials."""
    rng = np.random.default_rng(11)
    overall, bands = [], []
    for _ in range(200):
        p = rng.beta(1.5, 10, 1500)
        y = (rng.random(len(p)) < p).astype(int)
        m = pd_metrics(y, p)
        overall.append(m["calibration_in_the_large"]["within_interval"])
        bands += [r["within_interval"] for r in m["calibration_by_band"] if r["n"] >= 30]
    assert np.mean(overall) >= 0.9
    assert np.mean(bands) >= 0.9
    assert len(bands) > 500


def test_cutoffs_on_calibrated_data() -> None:
    """With true PDs, pre-qualified applicants are below the break-even PD and
    declined ones above it, and the cut-offs are ordered."""
    rng = np.random.default_rng(4)
    econ = Economics()
    be = econ.break_even_pd
    for _ in range(20):
        p = rng.beta(1.5, 8, 4000)
        y = (rng.random(len(p)) < p).astype(int)
        cut = choose_cutoffs(y, p, econ)
        low, high = cut["prequalify_below"], cut["decline_pd"]
        assert 0.0 <= low <= high <= 1.0
        assert p[p < low].max() < be * 1.5 and p[p >= high].min() > be * 0.8
        assert p[p < low].mean() < be < p[p >= high].mean()
        shares = sum(v["share"] for v in cut["on_validation"].values())
        assert shares == pytest.approx(1.0)
