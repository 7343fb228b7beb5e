"""A synthetic credit training frame for the PD model's tests: the columns the
real frames will have (``CREDIT_V1.columns`` + application columns +
``application_ts`` + ``defaulted``), with defaults drawn from a known
logistic model so the truth is available. (The landing generator's credit
data is built elsewhere; this exercises the modelling alone.)"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pitstore.core.spec import ACCOUNT_LEDGER_DAILY, CREDIT_V1

LEDGER = ACCOUNT_LEDGER_DAILY.column


def synthetic_credit_frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(np.log(3_500_000), 0.5, n).round()  # annual, pence
    inflow = (income / 4 * rng.uniform(0.7, 1.1, n)).round()  # ~a quarter's income
    outflow = (inflow * rng.uniform(0.5, 1.3, n)).round()
    missed = rng.poisson(0.3, n)
    overdraft = rng.binomial(90, rng.beta(1, 12, n))
    cols: dict[str, object] = {c: rng.normal(0, 1, n) for c in CREDIT_V1.columns}
    cols.update(
        {
            LEDGER("inflow_sum_90d"): inflow,
            LEDGER("outflow_sum_90d"): outflow,
            LEDGER("salary_days_90d"): rng.integers(0, 4, n),
            LEDGER("overdraft_days_90d"): overdraft,
            LEDGER("overdraft_fee_sum_90d"): overdraft * 500,
            LEDGER("missed_payments_90d"): missed,
            LEDGER("missed_payments_180d"): missed + rng.poisson(0.2, n),
        }
    )
    frame = pd.DataFrame(cols)
    frame["application_id"] = [f"app-{i:06d}" for i in range(n)]
    frame["account_id"] = [f"acc-{i:06d}" for i in range(n)]
    frame["amount"] = rng.integers(50, 250, n) * 10_000.0
    frame["term_months"] = rng.choice([12, 24, 36, 48, 60], n)
    frame["stated_income"] = income
    frame["existing_debt"] = (income / 12 * rng.uniform(0, 0.3, n)).round()
    frame["employment_months"] = rng.integers(0, 240, n)
    frame["applicant_age"] = rng.integers(18, 80, n)
    frame["purpose"] = rng.choice(["car", "home", "other"], n)
    frame["region"] = rng.choice(["north", "south", "london", "wales"], n)
    msld = rng.integers(1, 120, n).astype("float64")
    msld[rng.random(n) < 0.8] = np.nan
    frame["months_since_last_default"] = msld
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame["application_ts"] = start + pd.to_timedelta(np.sort(rng.uniform(0, 365, n)), unit="D")
    dti = (frame["existing_debt"] + frame["amount"] / frame["term_months"]) / (income / 12)
    logit = (
        -3.2
        + 0.6 * missed
        + 0.04 * overdraft
        + 2.5 * dti
        - 0.004 * frame["employment_months"]
        + 0.8 * (outflow / inflow - 1)
        + np.where(np.isnan(msld), 0.0, 1.2)
    )
    frame["true_pd"] = 1 / (1 + np.exp(-logit))
    frame["defaulted"] = rng.random(n) < frame["true_pd"]
    return frame
