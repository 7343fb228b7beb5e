"""Request-time credit features: one implementation, per request and per frame."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pitstore.core.credit_request import (
    APPLICATION_INPUTS,
    CREDIT_REQUEST_FEATURES,
    NOMINAL_ANNUAL_RATE,
    RATIO_CAP,
    annuity_payment,
    credit_request_features,
    credit_request_frame,
    ledger_sum_columns,
)
from pitstore.core.spec import ACCOUNT_LEDGER_DAILY, CREDIT_V1, FRAUD_V1

INFLOW, OUTFLOW = ledger_sum_columns(CREDIT_V1)
APP = {
    "amount": 500_000.0,
    "term_months": 36,
    "stated_income": 3_600_000.0,
    "existing_debt": 20_000.0,
    "employment_months": 30,
    "applicant_age": 40,
    "months_since_last_default": None,
}


def test_ledger_columns_come_from_the_view() -> None:
    assert (
        ACCOUNT_LEDGER_DAILY.column("inflow_sum_90d"),
        ACCOUNT_LEDGER_DAILY.column("outflow_sum_90d"),
    ) == (INFLOW, OUTFLOW)
    with pytest.raises(ValueError, match="no ledger view"):
        ledger_sum_columns(FRAUD_V1)


def test_annuity_repays_the_principal() -> None:
    """The discounted payments at the nominal monthly rate add up to the principal."""
    r = NOMINAL_ANNUAL_RATE / 12
    for amount, n in [(500_000.0, 36), (1_000_000.0, 60), (120_000.0, 1)]:
        pay = annuity_payment(amount, n)
        assert sum(pay / (1 + r) ** t for t in range(1, n + 1)) == pytest.approx(amount)
    assert math.isnan(annuity_payment(500_000.0, 0))
    assert math.isnan(annuity_payment(500_000.0, float("nan")))


def test_ratios_and_the_nan_policy() -> None:
    f = credit_request_features(APP, 900_000.0, 800_000.0)
    assert list(f) == list(CREDIT_REQUEST_FEATURES)
    pay = annuity_payment(500_000.0, 36)
    assert f["monthly_payment"] == pytest.approx(pay)
    assert f["debt_to_income"] == pytest.approx((20_000 + pay) / 300_000)
    assert f["payment_to_income"] == pytest.approx(pay / 300_000)
    assert f["outflow_inflow_ratio"] == pytest.approx(8 / 9)
    assert math.isnan(f["months_since_last_default"])
    # Zero income: the worst value (the ratio's limit), not inf.
    zero = credit_request_features({**APP, "stated_income": 0}, 0.0, 5.0)
    assert zero["debt_to_income"] == zero["payment_to_income"] == RATIO_CAP
    assert zero["outflow_inflow_ratio"] == RATIO_CAP
    # Missing income / unknown account / no cash flow at all: unknown (NaN).
    unknown = credit_request_features({**APP, "stated_income": None}, None, 1.0)
    assert math.isnan(unknown["debt_to_income"]) and math.isnan(unknown["outflow_inflow_ratio"])
    assert math.isnan(credit_request_features(APP, 0.0, 0.0)["outflow_inflow_ratio"])
    # Missing existing debt counts as none.
    no_debt = credit_request_features({**APP, "existing_debt": None}, 1.0, 1.0)
    assert no_debt["debt_to_income"] == pytest.approx(pay / 300_000)
    # Tiny income: capped, finite.
    assert (
        credit_request_features({**APP, "stated_income": 12}, 1.0, 1.0)["debt_to_income"]
        == RATIO_CAP
    )


def test_frame_and_request_agree() -> None:
    """Training (frame) and serving (one request) compute identical values."""
    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame(
        {
            "amount": rng.integers(1, 100, n) * 10_000.0,
            "term_months": rng.choice([0, 12, 36, 60], n),
            "stated_income": rng.choice([0.0, np.nan, 1_000_000.0, 5_000_000.0], n),
            "existing_debt": rng.choice([np.nan, 0.0, 50_000.0], n),
            "employment_months": rng.integers(0, 200, n),
            "applicant_age": rng.integers(18, 90, n),
            "months_since_last_default": rng.choice([np.nan, 3.0, 40.0], n),
            INFLOW: rng.choice([np.nan, 0.0, 600_000.0], n),
            OUTFLOW: rng.choice([np.nan, 0.0, 700_000.0], n),
        }
    )
    out = credit_request_frame(frame, CREDIT_V1)
    for i, row in enumerate(frame.to_dict("records")):
        app = {k: None if pd.isna(row[k]) else row[k] for k in APPLICATION_INPUTS}
        inflow = None if pd.isna(row[INFLOW]) else row[INFLOW]
        outflow = None if pd.isna(row[OUTFLOW]) else row[OUTFLOW]
        one = credit_request_features(app, inflow, outflow)
        got = out.iloc[i][list(CREDIT_REQUEST_FEATURES)].to_numpy(dtype="float64")
        np.testing.assert_array_equal(got, np.array(list(one.values())))
    assert not np.isinf(out[list(CREDIT_REQUEST_FEATURES)].to_numpy()).any()


def test_frame_lacking_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        credit_request_frame(pd.DataFrame({"amount": [1.0]}), CREDIT_V1)
