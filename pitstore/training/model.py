"""The fraud model: HistGradientBoosting with class weights, out-of-time
validation, probability calibration, fraud metrics and a cost-based threshold.

Split (all by ``ts``, never shuffled): the earliest ``1 - valid_share`` of the
labelled rows train the model -- its first 80% fit the trees, the last 20% fit
the (sigmoid) calibration -- and the latest ``valid_share`` are the
out-of-time validation set all metrics and the threshold come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    roc_auc_score,
)

from pitstore.core.request_features import (
    REQUEST_FEATURES,
    account_30d_mean_column,
    request_time_features,
)
from pitstore.core.spec import FeatureService
from pitstore.models.fast_model import calibration_terms
from pitstore.training.joins import feature_columns

SEGMENTS = ("channel", "country", "merchant_category")


@dataclass(frozen=True)
class Costs:
    missed_fraud: float = 100.0  # a fraud approved (chargeback, customer harm)
    false_decline: float = 10.0  # a good customer blocked (lost sale, churn)
    review: float = 2.0  # an analyst looks at it (assumed to catch the fraud)


def model_feature_columns(service: FeatureService) -> list[str]:
    """The loader contract: Feast features ``<view>__<feature>``, then request features."""
    return [*feature_columns(service), *REQUEST_FEATURES]


def add_request_features(frame: pd.DataFrame, service: FeatureService) -> pd.DataFrame:
    """Request-time features for each row, via the one function serving calls too."""
    mean_col = account_30d_mean_column(service)
    mean = frame[mean_col] if mean_col in frame else pd.Series(np.nan, index=frame.index)
    records = frame[
        ["ts", *[c for c in ("amount", "country", "channel", "currency") if c in frame]]
    ].to_dict("records")
    feats = [
        request_time_features(
            {**r, "event_ts": r["ts"].to_pydatetime()},
            None if pd.isna(m) else float(m),
        )
        for r, m in zip(records, mean.to_numpy(), strict=True)
    ]
    out = frame.copy()
    req = pd.DataFrame(feats, index=frame.index)
    for col in REQUEST_FEATURES:
        out[col] = req[col].astype("float64")
    return out


def to_model_frame(table: pa.Table, service: FeatureService) -> pd.DataFrame:
    df = add_request_features(table.to_pandas(), service)
    cols = model_feature_columns(service)
    df[cols] = df[cols].astype("float64")
    return df


def time_split(
    df: pd.DataFrame, valid_share: float = 0.3
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    labelled = df[df["label"].notna()].sort_values(["ts", "transaction_id"], kind="stable")
    cut = labelled["ts"].iloc[int(len(labelled) * (1 - valid_share))]
    return labelled[labelled["ts"] < cut], labelled[labelled["ts"] >= cut], cut


def fit(train: pd.DataFrame, columns: list[str], seed: int = 0) -> CalibratedClassifierCV:
    y = train["label"].astype(int).to_numpy()
    if y.sum() < 2 or y.sum() == len(y):
        raise ValueError(f"training rows need both classes; got {int(y.sum())} fraud of {len(y)}")
    n_fit = int(len(train) * 0.8)
    fit_part, cal_part = train.iloc[:n_fit], train.iloc[n_fit:]
    if cal_part["label"].sum() == 0:  # too few frauds late in the window: calibrate on all
        fit_part, cal_part = train, train
    base = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.06,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        class_weight="balanced",
        random_state=seed,
    )
    base.fit(fit_part[columns].to_numpy(), fit_part["label"].astype(int).to_numpy())
    model = CalibratedClassifierCV(FrozenEstimator(base), method="sigmoid")
    model.fit(cal_part[columns].to_numpy(), cal_part["label"].astype(int).to_numpy())
    return model


REFERENCE_QUANTILES = 101  # 0th, 1st, ..., 100th percentile


def reference_stats(train: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Per model input, the training rows' median and quantiles (0..100): what
    serving's reasons call "typical" and rank a value against. NaN (an unknown
    entity) is left out; an input with no value at all gets None."""
    probs = np.linspace(0.0, 1.0, REFERENCE_QUANTILES)
    medians: dict[str, float | None] = {}
    quantiles: dict[str, list[float] | None] = {}
    for col in columns:
        values = train[col].to_numpy(dtype="float64")
        values = values[~np.isnan(values)]
        if len(values) == 0:
            medians[col] = quantiles[col] = None
            continue
        medians[col] = float(np.median(values))
        # observed values, not interpolated ones: a count's quantiles stay whole
        quantiles[col] = [float(q) for q in np.quantile(values, probs, method="inverted_cdf")]
    return {
        "rows": len(train),
        "source": "the training rows (tree fit + calibration), before the out-of-time cut",
        "medians": medians,
        "quantiles": quantiles,
    }


def explanation_card(model: CalibratedClassifierCV) -> dict[str, Any]:
    """What the served reasons' contributions are, for the model card."""
    terms = calibration_terms(model)
    return {
        "method": "tree_shap_path_dependent",
        "unit": "log_odds",
        "sums_to": (
            "expected_value + sum(contributions) = the booster's raw score t "
            "(HistGradientBoostingClassifier.decision_function: log-odds before calibration)"
        ),
        "calibration": (
            "score = mean over the sigmoid calibrators k of 1 / (1 + exp(a_k * t + b_k)); "
            "all a_k < 0 makes the score strictly increasing in t, so a positive "
            "contribution raised the score"
        ),
        "calibrators": [{"a": a, "b": b} for a, b in terms] if terms else None,
        "calibration_increasing": bool(terms) and all(a < 0 for a, _ in terms or []),
    }


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if len(chunk) == 0:
            continue
        out.append(
            {
                "n": int(len(chunk)),
                "mean_score": float(p[chunk].mean()),
                "fraud_rate": float(y[chunk].mean()),
                "score_min": float(p[chunk].min()),
                "score_max": float(p[chunk].max()),
            }
        )
    return out


def metrics(y: np.ndarray, p: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
    pos = int(y.sum())
    out: dict[str, Any] = {
        "rows": int(len(y)),
        "fraud": pos,
        "base_rate": float(pos / len(y)) if len(y) else None,
    }
    if 0 < pos < len(y):
        out["pr_auc"] = float(average_precision_score(y, p))
        out["roc_auc"] = float(roc_auc_score(y, p))
    else:
        out["pr_auc"] = out["roc_auc"] = None
    out["brier"] = float(brier_score_loss(y, p, pos_label=1)) if len(y) else None
    if threshold is not None:
        flagged = p >= threshold
        tp = int((flagged & (y == 1)).sum())
        out["precision_at_threshold"] = float(tp / flagged.sum()) if flagged.sum() else None
        out["recall_at_threshold"] = float(tp / pos) if pos else None
        out["flag_rate"] = float(flagged.mean())
    return out


def choose_threshold(y: np.ndarray, p: np.ndarray, costs: Costs) -> tuple[float, list[float]]:
    """Decline threshold minimising expected cost on validation; review band below it.

    Decline when ``score >= high``; review when ``low <= score < high``, where
    ``low`` is the calibrated probability above which a review costs less than
    the expected missed fraud (``p * missed_fraud > review``).
    """
    candidates = np.unique(np.concatenate([p, [1.0 + 1e-9]]))
    best_t, best_cost = 1.0 + 1e-9, float("inf")
    for t in candidates:
        flagged = p >= t
        cost = (
            costs.missed_fraud * ((~flagged) & (y == 1)).sum()
            + costs.false_decline * (flagged & (y == 0)).sum()
        )
        if cost < best_cost:
            best_t, best_cost = float(t), float(cost)
    high = min(best_t, 1.0)
    low = min(costs.review / costs.missed_fraud, high)
    return high, [float(low), float(high)]


def segment_metrics(
    valid: pd.DataFrame, p: np.ndarray, threshold: float, min_rows: int = 50
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    y = valid["label"].astype(int).to_numpy()
    for seg in SEGMENTS:
        if seg not in valid:
            continue
        out[seg] = {}
        values = valid[seg].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() >= min_rows:
                out[seg][value] = metrics(y[mask], p[mask], threshold)
    return out


@dataclass
class TrainResult:
    model: CalibratedClassifierCV
    columns: list[str]
    threshold: float
    review_band: list[float]
    metrics: dict[str, Any]
    split: dict[str, Any]
    valid_y: np.ndarray = field(repr=False)
    valid_p: np.ndarray = field(repr=False)
    reference: dict[str, Any] = field(default_factory=dict, repr=False)


def train_and_evaluate(
    df: pd.DataFrame,
    service: FeatureService,
    costs: Costs | None = None,
    valid_share: float = 0.3,
    holdout: pd.DataFrame | None = None,
    seed: int = 0,
) -> TrainResult:
    """Fit on the early rows, evaluate on the late ones (or on ``holdout`` if given).

    ``holdout`` lets ``--compare-modes`` fit on an ``as_of`` frame yet score
    validation rows the way serving would see them (``as_known`` features).
    """
    costs = costs or Costs()
    columns = model_feature_columns(service)
    train, valid, cut = time_split(df, valid_share)
    if holdout is not None:
        valid = holdout.set_index("transaction_id").loc[valid["transaction_id"]].reset_index()
    model = fit(train, columns, seed)
    y = valid["label"].astype(int).to_numpy()
    p = model.predict_proba(valid[columns].to_numpy())[:, 1]
    threshold, band = choose_threshold(y, p, costs)
    m = metrics(y, p, threshold)
    m["calibration"] = calibration_table(y, p)
    m["by_segment"] = segment_metrics(valid, p, threshold)
    m["costs"] = costs.__dict__
    m["review_share"] = float(((p >= band[0]) & (p < band[1])).mean())
    m["baseline_pr_auc"] = m["base_rate"]  # a constant score's PR-AUC = the fraud rate
    split = {
        "train_from": str(train["ts"].min()),
        "train_to": str(train["ts"].max()),
        "valid_from": str(cut),
        "valid_to": str(valid["ts"].max()),
        "train_rows": len(train),
        "train_fraud": int(train["label"].sum()),
        "valid_rows": len(valid),
        "valid_fraud": int(y.sum()),
    }
    return TrainResult(
        model, columns, threshold, band, m, split, y, p, reference_stats(train, columns)
    )
