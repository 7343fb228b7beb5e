"""Validation metrics of a probability-of-default model.

Discrimination: AUC, Gini (= 2 AUC - 1), KS (the largest gap between the
cumulative PD distributions of defaulters and non-defaulters), PR-AUC.
Accuracy of the probabilities: Brier score; a calibration table by PD band with
the observed default rate and its Wilson 95% interval; calibration-in-the-large
(mean PD against the observed rate and its interval); the calibration slope and
intercept (Cox: the logistic regression of the outcome on logit(PD); a
well-calibrated model has slope 1, intercept 0; slope < 1 means the PDs are too
extreme); and the same calibration by segment (age band, income band, region).

Every function is pure: outcome ``y`` (0/1) and PD ``p`` arrays in, dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

# PD bands of the calibration table: (lower, upper] except the first, [0, 0.02].
PD_BANDS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.10, 0.20, 0.35, 0.50, 1.0)
# Applicant age bands (years): lower edges; the last is open.
AGE_BANDS: tuple[int, ...] = (18, 25, 35, 50, 65)
# Annual stated income bands, in minor units of the home currency (GBP pence).
INCOME_BANDS: tuple[float, ...] = (0.0, 2_000_000, 3_500_000, 5_000_000, 8_000_000)
# Segments smaller than this get no interval-based verdict (too few to tell).
MIN_SEGMENT_ROWS = 30
Z95 = float(norm.ppf(0.975))


def wilson_bounds(k: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of binomial proportions k / n, elementwise (95% by
    default; [0, 1] where n == 0).

    Chosen over the normal (Wald) interval: it stays inside [0, 1] and keeps its
    coverage near 0 defaults in a band, where PD bands live.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    phat = k / safe
    denom = 1 + z * z / safe
    centre = (phat + z * z / (2 * safe)) / denom
    half = z * np.sqrt(phat * (1 - phat) / safe + z * z / (4 * safe * safe)) / denom
    lo = np.where(n > 0, np.maximum(0.0, centre - half), 0.0)
    hi = np.where(n > 0, np.minimum(1.0, centre + half), 1.0)
    return lo, hi


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of one proportion k / n."""
    lo, hi = wilson_bounds(np.array(k), np.array(n), z)
    return float(lo), float(hi)


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """max over thresholds of TPR - FPR (= the two-sample KS statistic of the
    defaulters' and non-defaulters' PDs)."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the unpenalised logistic fit y ~ a + b * logit(p)."""
    x = logit(np.clip(p, 1e-12, 1 - 1e-12))

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        eta = theta[0] + theta[1] * x
        # log(1 + e^eta) - y * eta, summed; its gradient uses expit(eta) - y.
        loss = float(np.sum(np.logaddexp(0.0, eta) - y * eta))
        r = expit(eta) - y
        return loss, np.array([r.sum(), (r * x).sum()])

    res = minimize(nll, np.array([0.0, 1.0]), jac=True, method="BFGS", options={"gtol": 1e-10})
    return float(res.x[1]), float(res.x[0])


def group_calibration(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """One group's mean PD against its observed default rate and Wilson interval."""
    n, k = len(y), int(y.sum())
    lo, hi = wilson_interval(k, n)
    mean_pd = float(p.mean()) if n else None
    return {
        "n": n,
        "defaults": k,
        "mean_pd": mean_pd,
        "observed_rate": k / n if n else None,
        "ci_low": lo,
        "ci_high": hi,
        # Is the mean PD inside the observed rate's 95% interval?
        "within_interval": None if mean_pd is None else bool(lo <= mean_pd <= hi),
    }


def band_index(p: np.ndarray, edges: Sequence[float] = PD_BANDS) -> np.ndarray:
    """The PD band of each PD: 0 for [e0, e1], i for (e_i, e_{i+1}]."""
    return np.clip(np.searchsorted(np.asarray(edges), p, side="left") - 1, 0, len(edges) - 2)


def calibration_by_band(
    y: np.ndarray, p: np.ndarray, edges: Sequence[float] = PD_BANDS
) -> list[dict[str, Any]]:
    """The calibration table: one row per non-empty PD band."""
    idx = band_index(p, edges)
    rows = []
    for i in range(len(edges) - 1):
        mask = idx == i
        if mask.any():
            rows.append(
                {
                    "band": f"{edges[i]:.2f}-{edges[i + 1]:.2f}",
                    **group_calibration(y[mask], p[mask]),
                }
            )
    return rows


def age_band(age: np.ndarray) -> np.ndarray:
    """'18-24', '25-34', ..., '65+' (and 'unknown' for NaN / under 18)."""
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(AGE_BANDS, AGE_BANDS[1:], strict=False)]
    labels.append(f"{AGE_BANDS[-1]}+")
    return _band_labels(np.asarray(age, dtype=np.float64), AGE_BANDS, labels)


def income_band(income: np.ndarray) -> np.ndarray:
    """Annual income bands in thousands of the home currency ('<20k', '20k-35k', ...)."""
    k = [int(e // 100_000) for e in INCOME_BANDS]  # minor units -> thousands
    labels = [f"{lo}k-{hi}k" if lo else f"<{hi}k" for lo, hi in zip(k, k[1:], strict=False)]
    labels.append(f"{k[-1]}k+")
    return _band_labels(np.asarray(income, dtype=np.float64), INCOME_BANDS, labels)


def _band_labels(values: np.ndarray, edges: Sequence[float], labels: list[str]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    out = np.array(labels, dtype=object)[np.clip(idx, 0, len(labels) - 1)]
    out[np.isnan(values) | (idx < 0)] = "unknown"
    return out


def discrimination(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """AUC, Gini, KS, PR-AUC; None when only one class is present."""
    if not 0 < int(y.sum()) < len(y):
        return {"auc": None, "gini": None, "ks": None, "pr_auc": None}
    auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "gini": 2 * auc - 1,
        "ks": ks_statistic(y, p),
        "pr_auc": float(average_precision_score(y, p)),
    }


def segment_calibration(
    y: np.ndarray, p: np.ndarray, segments: Mapping[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per segment column and value: calibration-in-the-large and AUC."""
    out: dict[str, dict[str, Any]] = {}
    for name, labels in segments.items():
        values = np.asarray(labels, dtype=object).astype(str)
        out[name] = {}
        for value in sorted(set(values)):
            mask = values == value
            row = group_calibration(y[mask], p[mask])
            row["auc"] = discrimination(y[mask], p[mask])["auc"]
            if mask.sum() < MIN_SEGMENT_ROWS:
                row["within_interval"] = None  # too few rows to judge
            out[name][value] = row
    return out


def pd_metrics(
    y: np.ndarray, p: np.ndarray, segments: Mapping[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Every validation metric of PDs ``p`` against outcomes ``y``."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    out: dict[str, Any] = {
        "rows": len(y),
        "defaults": int(y.sum()),
        "default_rate": float(y.mean()) if len(y) else None,
        **discrimination(y, p),
        "brier": float(brier_score_loss(y, p, pos_label=1)) if len(y) else None,
        "calibration_in_the_large": group_calibration(y, p),
        "calibration_by_band": calibration_by_band(y, p),
    }
    if 0 < int(y.sum()) < len(y):
        slope, intercept = calibration_slope_intercept(y, p)
        out["calibration_slope"], out["calibration_intercept"] = slope, intercept
    else:
        out["calibration_slope"] = out["calibration_intercept"] = None
    out["by_segment"] = segment_calibration(y, p, segments or {})
    return out
