"""The credit pre-screening PD model: monotone HistGradientBoosting, Platt
calibration on a time-ordered slice, out-of-time validation, decision cut-offs.

Input: a frame with the service's feature columns (``CREDIT_V1.columns``), the
application columns (``APPLICATIONS_SCHEMA``), ``application_ts`` and
``defaulted``. The request features (``core.credit_request``) are added by the
same function serving calls.

Split (by ``application_ts``, never shuffled): the earliest ``1 - valid_share``
of the labelled applications train the model -- its first 80% fit the trees,
its last 20% fit the calibration -- and the latest ``valid_share`` are the
out-of-time validation set every metric and cut-off comes from.

The fitted model has the fraud model's shape,
``CalibratedClassifierCV(FrozenEstimator(HistGradientBoostingClassifier), "sigmoid")``,
so ``models.fast_model.compile_fast`` and the TreeSHAP contributions serve it
unchanged (monotonic constraints change which splits are allowed, not the
trees' layout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from threadpoolctl import threadpool_limits

from pitstore.core.credit_request import (
    CREDIT_REQUEST_FEATURES,
    credit_request_frame,
    ledger_view,
)
from pitstore.core.spec import CREDIT_V1, FeatureService
from pitstore.models.fast_model import calibration_terms
from pitstore.training.credit_cutoffs import Economics, choose_cutoffs
from pitstore.training.credit_metrics import age_band, income_band, pd_metrics
from pitstore.training.model import calibration_table, explanation_card, reference_stats

# Known directions of effect, holding every other input fixed (+1: a higher value
# never lowers the PD; -1: never raises it). Why each:
LEDGER_DIRECTIONS: dict[str, int] = {
    # Arrears are the strongest sign of a repayment problem; more never helps.
    "missed_payments": +1,
    # Days overdrawn and the fees for it: a cash-flow shortfall, the more the worse.
    "overdraft_days": +1,
    "overdraft_fee_sum": +1,
    # More income coming in, and salary on more days, is more capacity to repay.
    "inflow_sum": -1,
    "salary_days": -1,
}
REQUEST_DIRECTIONS: dict[str, int] = {
    # The share of income already committed, with and without the new loan.
    "debt_to_income": +1,
    "payment_to_income": +1,
    # Spending more of what comes in leaves less for the repayment.
    "outflow_inflow_ratio": +1,
    # Capacity (income) and stability (time in the job).
    "stated_income": -1,
    "employment_months": -1,
    # A default further back is less predictive than a recent one. (NaN, none on
    # file, is routed by the trees on their own: it is not a point on this axis.)
    "months_since_last_default": -1,
}
# 0 elsewhere: balance volatility,
# income spread, gross outflow, amount, term, payment and age have no direction
# one can defend with everything else fixed (age in particular is U-shaped, and a
# constraint on it would encode a policy, not a fact).


def monotone_directions(service: FeatureService = CREDIT_V1) -> dict[str, int]:
    """+1 / -1 / 0 per model input of ``service`` (see the direction tables)."""
    ledger = ledger_view(service)
    out = {c: 0 for c in credit_model_columns(service)}
    for feature in ledger.features:
        out[ledger.column(feature)] = LEDGER_DIRECTIONS.get(feature.aggregation.name, 0)
    out.update(REQUEST_DIRECTIONS)
    return out


def credit_model_columns(service: FeatureService = CREDIT_V1) -> list[str]:
    """The model's inputs, in order: the service's feature columns, then the request features."""
    return [*service.columns, *CREDIT_REQUEST_FEATURES]


MONOTONE_DIRECTIONS: dict[str, int] = monotone_directions(CREDIT_V1)
CALIBRATION_SHARE = 0.2
PARALLEL_FIT_ROWS = 50_000
HGB_PARAMS: dict[str, Any] = {
    "max_iter": 200,
    "learning_rate": 0.05,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    # Early stopping would hold out a *random* slice: the split stays by time.
    "early_stopping": False,
}


class CreditModelError(ValueError):
    """The data cannot give a valid PD model (one class only, inverted calibration...)."""


def time_split(
    frame: pd.DataFrame, valid_share: float = 0.3
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """(train, valid, cut): labelled applications ordered by time, never shuffled;
    valid = ``application_ts >= cut``, the latest ``valid_share`` of them."""
    labelled = frame[frame["defaulted"].notna()].copy()
    if len(labelled) < 10:
        raise CreditModelError(f"only {len(labelled)} labelled applications: too few to split")
    labelled["application_ts"] = pd.to_datetime(labelled["application_ts"], utc=True)
    keys = ["application_ts", *(["application_id"] if "application_id" in labelled else [])]
    labelled = labelled.sort_values(keys, kind="stable")
    cut = labelled["application_ts"].iloc[int(len(labelled) * (1 - valid_share))]
    return (
        labelled[labelled["application_ts"] < cut],
        labelled[labelled["application_ts"] >= cut],
        cut,
    )


def fit_pd_model(
    train: pd.DataFrame,
    columns: Sequence[str],
    directions: Mapping[str, int],
    seed: int = 0,
    target: str = "defaulted",
) -> CalibratedClassifierCV:
    """Monotone trees on the first 80% of ``train`` (in its order), Platt scaling
    on the last 20%. Raises ``CreditModelError`` unless the calibration rises
    with the trees' score (a positive Platt slope), which is what keeps the
    calibrated PD monotone in every constrained input."""
    y = train[target].astype(int).to_numpy()
    if not 2 <= y.sum() <= len(y) - 2:
        raise CreditModelError(f"training rows need both outcomes; got {int(y.sum())} of {len(y)}")
    n_fit = int(len(train) * (1 - CALIBRATION_SHARE))
    x = train[list(columns)].to_numpy(dtype=np.float64)
    unseen = [
        c for c, known in zip(columns, ~np.isnan(x[:n_fit]).all(axis=0), strict=True) if not known
    ]
    if unseen:
        # An input missing in every fitted row cannot inform the PD (and sklearn's
        # binning fails on it): typically a view whose history starts after the
        # applications do. Say which, rather than train a model blind to it.
        raise CreditModelError(
            f"inputs missing in every training row: {', '.join(unseen)} "
            "(their history starts after these applications: backfill it, or drop them)"
        )
    if not 0 < y[n_fit:].sum() < len(y) - n_fit:
        raise CreditModelError(
            "the calibration slice (the latest 20% of training) lacks an outcome"
        )
    base = HistGradientBoostingClassifier(
        **HGB_PARAMS, monotonic_cst=[int(directions.get(c, 0)) for c in columns], random_state=seed
    )
    # Small fits run single-threaded: OpenMP's spinning threads cost more than the
    # work (measured: 3.6 s against 0.4 s for 560 rows on a busy 2-core machine).
    with threadpool_limits(1 if len(train) < PARALLEL_FIT_ROWS else None):
        base.fit(x[:n_fit], y[:n_fit])
        model = CalibratedClassifierCV(FrozenEstimator(base), method="sigmoid")
        model.fit(x[n_fit:], y[n_fit:])
    terms = calibration_terms(model) or []
    if not terms or any(a >= 0 for a, _ in terms):
        raise CreditModelError(
            f"the calibration does not rise with the model's score (Platt terms {terms}): "
            "the trees do not rank the calibration slice"
        )
    return model


def segments_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The calibration segments present in ``frame``: age band, income band, region."""
    out: dict[str, np.ndarray] = {}
    if "applicant_age" in frame:
        out["age_band"] = age_band(
            frame["applicant_age"].to_numpy(dtype="float64", na_value=np.nan)
        )
    if "stated_income" in frame:
        income = frame["stated_income"].to_numpy(dtype="float64", na_value=np.nan)
        out["income_band"] = income_band(income)
    if "region" in frame:
        out["region"] = frame["region"].fillna("unknown").astype(str).to_numpy()
    return out


@dataclass
class CreditResult:
    model: CalibratedClassifierCV
    columns: list[str]
    directions: dict[str, int]
    cutoffs: dict[str, Any]
    metrics: dict[str, Any]
    split: dict[str, Any]
    valid_y: np.ndarray = field(repr=False)
    valid_p: np.ndarray = field(repr=False)
    reference: dict[str, Any] = field(default_factory=dict, repr=False)


def evaluate(
    model: Any,
    valid: pd.DataFrame,
    columns: Sequence[str],
    economics: Economics,
    segments: Mapping[str, np.ndarray],
    target: str = "defaulted",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict[str, Any]]:
    """(y, PD, metrics, cut-offs) of ``model`` on the validation rows."""
    y = valid[target].astype(int).to_numpy()
    p = model.predict_proba(valid[list(columns)].to_numpy(dtype=np.float64))[:, 1]
    metrics = pd_metrics(y, p, segments)
    # Decile table in the registry's plot format (mean_score / fraud_rate keys).
    metrics["calibration"] = calibration_table(y, p)
    return y, p, metrics, choose_cutoffs(y, p, economics)


def train_credit_model(
    frame: pd.DataFrame,
    service: FeatureService = CREDIT_V1,
    valid_share: float = 0.3,
    economics: Economics | None = None,
    seed: int = 0,
) -> CreditResult:
    """Add the request features, split by time, fit, validate out of time, choose cut-offs."""
    economics = economics or Economics()
    columns = credit_model_columns(service)
    directions = monotone_directions(service)
    missing = [c for c in (*service.columns, "application_ts", "defaulted") if c not in frame]
    if missing:
        raise CreditModelError(f"frame lacks columns {missing}")
    df = credit_request_frame(frame, service)
    train, valid, cut = time_split(df, valid_share)
    model = fit_pd_model(train, columns, directions, seed)
    y, p, metrics, cutoffs = evaluate(model, valid, columns, economics, segments_of(valid))
    split = {
        "method": "out of time: ordered by application_ts, never shuffled",
        "train_from": str(train["application_ts"].min()),
        "train_to": str(train["application_ts"].max()),
        "calibration_rows": len(train) - int(len(train) * (1 - CALIBRATION_SHARE)),
        "valid_from": str(cut),
        "valid_to": str(valid["application_ts"].max()),
        "train_rows": len(train),
        "train_defaults": int(train["defaulted"].astype(int).sum()),
        "valid_rows": len(valid),
        "valid_defaults": int(y.sum()),
    }
    reference = reference_stats(train, columns)
    return CreditResult(model, columns, directions, cutoffs, metrics, split, y, p, reference)


def credit_card(result: CreditResult, service: FeatureService = CREDIT_V1) -> dict[str, Any]:
    """The model-card fields this module knows (the caller adds version, frame
    fingerprint, code version, dates). ``threshold`` / ``review_band`` follow the
    registry's decision contract: PD >= high declines, low <= PD < high refers,
    below low pre-qualifies."""
    cut = result.cutoffs
    return {
        "model_kind": "credit_pd",
        "feature_service": service.name,
        "feature_columns": result.columns,
        "monotone_directions": result.directions,
        "hyperparameters": HGB_PARAMS,
        "calibration_method": "sigmoid (Platt) on the latest 20% of training, slope checked > 0",
        "split": result.split,
        "metrics": result.metrics,
        "cutoffs": cut,
        "threshold": cut["decline_pd"],
        "review_band": [cut["prequalify_below"], cut["decline_pd"]],
        "decisions": {"below_low": "pre-qualified", "band": "refer", "at_or_above_high": "decline"},
        "explanation": explanation_card(result.model),
        # The shape models.fast_model compiles (sigmoid-calibrated numeric HGB);
        # serving's compile_fast still checks itself against sklearn at load.
        "fast_path_shape": calibration_terms(result.model) is not None,
        "reference": result.reference,
    }
