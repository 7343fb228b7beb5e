"""The PD pipeline on real public loan data: UCI's German Credit (Statlog).

1,000 consumer loans of a German bank (1970s), 300 of them "bad". The file is
``datasets/german_credit.parquet`` at the repository root (source, licence and
conversion in ``datasets/README.md``). Its attributes map onto the credit
model's inputs where the meaning matches, with the same monotone directions
(``training.credit_model``); the rest enter unconstrained:

| German Credit attribute | model input | direction |
|---|---|---|
| installment rate in % of disposable income (1-4) | ``payment_to_income`` | +1 |
| credit history "delay in paying off in the past" | ``missed_payments`` | +1 |
| checking account balance band (no account: NaN) | ``checking_balance`` (like inflow) | -1 |
| savings band (unknown: NaN) | ``savings`` (like inflow) | -1 |
| present employment since (band midpoint, months) | ``employment_months`` | -1 |
| duration, amount, age, other attributes (one-hot) | as they are | 0 |

Left out on purpose: ``personal_status_and_sex`` and ``foreign_worker``
(protected characteristics, which pitstore's applications do not carry either).

No time axis: each run splits stratified at random (seeded) into 70% train
(its last 20% calibrates, as in the production split) and 30% validation, and
the report gives the spread over several seeds. A random split is kinder than
an out-of-time one (no drift between train and validation), so these figures
are an upper bound on what the same pipeline does out of time.

The cut-offs use the dataset's own cost matrix: a bad loan granted costs 5, a
good one refused costs 1, so the break-even PD is 1/6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pitstore.training.credit_cutoffs import Economics
from pitstore.training.credit_metrics import age_band
from pitstore.training.credit_model import evaluate, fit_pd_model

UCI_COSTS = Economics(margin=1.0, loss_given_default=5.0)
CHECKING = {"... < 0 DM": 0.0, "0 <= ... < 200 DM": 1.0}
CHECKING_TOP = "... >= 200 DM / salary assignments for at least 1 year"
SAVINGS = {
    "... < 100 DM": 0.0,
    "100 <= ... < 500 DM": 1.0,
    "500 <= ... < 1000 DM": 2.0,
    "... >= 1000 DM": 3.0,
}
EMPLOYMENT_MONTHS = {
    "unemployed": 0.0,
    "... < 1 year": 6.0,
    "1 <= ... < 4 years": 30.0,
    "4 <= ... < 7 years": 66.0,
    "... >= 7 years": 96.0,
}
NOMINAL = (
    "credit_history",
    "purpose",
    "other_debtors_or_guarantors",
    "property",
    "other_installment_plans",
    "housing",
    "job",
    "telephone",
)
EXCLUDED = ("personal_status_and_sex", "foreign_worker")
DIRECTIONS = {
    "payment_to_income": +1,
    "missed_payments": +1,
    "checking_balance": -1,
    "savings": -1,
    "employment_months": -1,
}
REQUIRED = (
    "status_of_existing_checking_account",
    "savings_account_and_bonds",
    "present_employment_since",
    "installment_rate_in_percentage_of_disposable_income",
    "duration_in_month",
    "credit_amount",
    "age_in_years",
    "defaulted",
    *NOMINAL,
)


class CreditDataError(ValueError):
    pass


def load_german_credit(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CreditDataError(f"{path}: no such file (the German Credit parquet, see datasets/)")
    frame = pd.read_parquet(path)
    missing = [c for c in REQUIRED if c not in frame]
    if missing:
        raise CreditDataError(f"{path}: not the German Credit table (lacks {missing})")
    return frame


def model_inputs(raw: pd.DataFrame) -> pd.DataFrame:
    """The German Credit attributes as model inputs (see the module table)."""
    checking = raw["status_of_existing_checking_account"]
    out = pd.DataFrame(
        {
            "payment_to_income": raw["installment_rate_in_percentage_of_disposable_income"],
            "missed_payments": (raw["credit_history"] == "delay in paying off in the past"),
            "checking_balance": checking.map({**CHECKING, CHECKING_TOP: 2.0}),
            "savings": raw["savings_account_and_bonds"].map(SAVINGS),
            "employment_months": raw["present_employment_since"].map(EMPLOYMENT_MONTHS),
            "term_months": raw["duration_in_month"],
            "loan_amount": raw["credit_amount"],
            "applicant_age": raw["age_in_years"],
            "existing_credits": raw["number_of_existing_credits_at_this_bank"],
            "dependants": raw["number_of_people_being_liable_to_provide_maintenance_for"],
            "residence_years": raw["present_residence_since"],
        }
    ).astype("float64")
    dummies = pd.get_dummies(raw[list(NOMINAL)], prefix_sep="=", dtype="float64")
    return pd.concat([out, dummies], axis=1)


def stratified_split(y: np.ndarray, valid_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) row indices, each outcome split in the same proportion, shuffled."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        cut = int(round(len(idx) * valid_share))
        valid.append(idx[:cut])
        train.append(idx[cut:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(valid))


def run_once(
    inputs: pd.DataFrame, raw: pd.DataFrame, seed: int, directions: dict[str, int]
) -> dict[str, Any]:
    """Fit and validate on one seeded split; the metrics and cut-offs."""
    y = raw["defaulted"].astype(int).to_numpy()
    tr, va = stratified_split(y, 0.3, seed)
    columns = list(inputs.columns)
    frame = inputs.assign(defaulted=y)
    model = fit_pd_model(frame.iloc[tr], columns, directions, seed)
    valid = frame.iloc[va]
    segments = {
        "age_band": age_band(raw["age_in_years"].to_numpy(dtype="float64")[va]),
        "housing": raw["housing"].to_numpy()[va],
    }
    _, _, metrics, cutoffs = evaluate(model, valid, columns, UCI_COSTS, segments)
    return {"metrics": metrics, "cutoffs": cutoffs}


def _spread(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def validate_german_credit(path: Path, seeds: int = 5) -> dict[str, Any]:
    """The pipeline on German Credit over ``seeds`` splits, monotone and (for
    comparison) unconstrained: summary figures, and the first split in full."""
    raw = load_german_credit(path)
    inputs = model_inputs(raw)
    runs: dict[str, list[dict[str, Any]]] = {"monotone": [], "unconstrained": []}
    for seed in range(seeds):
        runs["monotone"].append(run_once(inputs, raw, seed, DIRECTIONS))
        runs["unconstrained"].append(run_once(inputs, raw, seed, {}))
    summary = {
        variant: {
            key: _spread([r["metrics"][key] for r in results])
            for key in ("auc", "gini", "ks", "pr_auc", "brier", "calibration_slope")
        }
        | {
            "mean_pd_minus_observed": _spread(
                [
                    r["metrics"]["calibration_in_the_large"]["mean_pd"]
                    - r["metrics"]["calibration_in_the_large"]["observed_rate"]
                    for r in results
                ]
            )
        }
        for variant, results in runs.items()
    }
    return {
        "dataset": str(path),
        "rows": len(raw),
        "defaults": int(raw["defaulted"].sum()),
        "inputs": list(inputs.columns),
        "directions": DIRECTIONS,
        "split": f"stratified random 70/30, seeds 0..{seeds - 1}; calibration = last 20% of train",
        "economics": {
            "margin": UCI_COSTS.margin,
            "loss_given_default": UCI_COSTS.loss_given_default,
        },
        "summary": summary,
        "first_split": runs["monotone"][0],
    }
