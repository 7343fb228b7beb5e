"""Request-time credit features: computed from a loan application (and two
looked-up ledger sums), by ONE implementation that training and serving share.

``credit_request_values`` is that implementation, on plain floats (a few
microseconds, no numpy or pandas per request); ``credit_request_features``
feeds it one application (serving) and ``credit_request_frame`` every row of a
training frame, so the two can never disagree on what a feature means.

Units: money is in integral minor units (``APPLICATIONS_SCHEMA``):
``stated_income`` is ANNUAL gross, ``existing_debt`` is MONTHLY repayments,
``amount`` is the requested principal.

The new loan's monthly payment is the annuity at the nominal annual rate
``NOMINAL_ANNUAL_RATE`` (12%, compounded monthly)::

    payment = P * r / (1 - (1 + r) ** -n),   r = NOMINAL_ANNUAL_RATE / 12

It is a fixed reference rate, not the price offered: pre-screening runs before
pricing, and a rate that moved with the model's own PD would feed back into it.

NaN / inf policy (HistGradientBoosting routes NaN to the side of each split that
learned it best; it refuses inf):

- income missing (None / NaN): every ratio over income is NaN (unknown);
- income <= 0 with an obligation: the ratio is ``RATIO_CAP`` (the worst value,
  the limit of the ratio as income falls to 0, so monotonicity holds);
- every ratio is clipped to ``[0, RATIO_CAP]``: past 10x income the exact value
  carries no more information and a finite cap keeps inf out of the model;
- ``outflow_inflow_ratio``: NaN when the account is unknown to the ledger (either
  sum missing) or had no cash flow at all in 90 days (0 / 0); ``RATIO_CAP``
  when money left but none came in;
- term_months <= 0 or missing: the payment and the ratios that use it are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from pitstore.core.spec import FeatureService, FeatureView

if TYPE_CHECKING:
    import pandas as pd

NOMINAL_ANNUAL_RATE = 0.12
RATIO_CAP = 10.0
NAN = float("nan")
LEDGER_WINDOW = timedelta(days=90)

CREDIT_REQUEST_FEATURES: tuple[str, ...] = (
    "loan_amount",
    "term_months",
    "monthly_payment",
    "stated_income",
    "employment_months",
    "applicant_age",
    "months_since_last_default",
    "debt_to_income",
    "payment_to_income",
    "outflow_inflow_ratio",
)
# The application columns the features are computed from (APPLICATIONS_SCHEMA names).
APPLICATION_INPUTS: tuple[str, ...] = (
    "amount",
    "term_months",
    "stated_income",
    "existing_debt",
    "employment_months",
    "applicant_age",
    "months_since_last_default",
)


def ledger_view(service: FeatureService) -> FeatureView:
    """The service's ledger-sourced view (the one the cash-flow sums come from)."""
    for view in service.views:
        if view.source == "ledger":
            return view
    raise ValueError(f"feature service {service.name} has no ledger view")


def ledger_sum_columns(service: FeatureService) -> tuple[str, str]:
    """(inflow, outflow) 90-day sum columns of the service's ledger view."""
    view = ledger_view(service)
    found: dict[str, str] = {}
    for feature in view.features:
        if feature.window == LEDGER_WINDOW and feature.aggregation.name in (
            "inflow_sum",
            "outflow_sum",
        ):
            found[feature.aggregation.name] = view.column(feature)
    if len(found) != 2:
        raise ValueError(f"view {view.name} lacks 90-day inflow_sum / outflow_sum features")
    return found["inflow_sum"], found["outflow_sum"]


def annuity_payment(amount: float, term_months: float) -> float:
    """Monthly payment repaying ``amount`` over ``term_months`` at the nominal rate
    (NaN when the term is not positive or either input is missing)."""
    if not term_months > 0 or math.isnan(amount):
        return NAN
    r = NOMINAL_ANNUAL_RATE / 12.0
    return amount * r / (1.0 - (1.0 + r) ** -term_months)


def _ratio(num: float, den: float) -> float:
    """num / den clipped to [0, RATIO_CAP]; den <= 0 with num > 0 -> cap; NaN stays NaN."""
    if math.isnan(num) or math.isnan(den):
        return NAN
    if den <= 0:
        return RATIO_CAP if num > 0 else 0.0
    return min(max(num / den, 0.0), RATIO_CAP)


def _num(value: Any) -> float:
    return NAN if value is None else float(value)


def credit_request_values(
    amount: float,
    term_months: float,
    stated_income: float,
    existing_debt: float,
    employment_months: float,
    applicant_age: float,
    months_since_last_default: float,
    inflow_90d: float,
    outflow_90d: float,
) -> tuple[float, ...]:
    """THE implementation: the features in ``CREDIT_REQUEST_FEATURES`` order, from
    plain floats (NaN = missing). Pure Python: a few microseconds per request."""
    payment = annuity_payment(amount, term_months)
    monthly_income = stated_income / 12.0
    # No existing debt recorded means none: the bureau reports debts, not their absence.
    existing = 0.0 if math.isnan(existing_debt) else existing_debt
    no_flow = inflow_90d == 0 and outflow_90d == 0
    return (
        amount,
        term_months,
        payment,
        stated_income,
        employment_months,
        applicant_age,
        months_since_last_default,
        _ratio(existing + payment, monthly_income),
        _ratio(payment, monthly_income),
        NAN if no_flow else _ratio(outflow_90d, inflow_90d),
    )


def credit_request_features(
    application: Mapping[str, Any], inflow_90d: float | None, outflow_90d: float | None
) -> dict[str, float]:
    """The features of one application (serving): ``application`` has the
    ``APPLICATION_INPUTS`` keys (None = missing); the sums are the account's
    looked-up 90-day ledger inflow / outflow (None when the account is unknown)."""
    g = application.get
    values = credit_request_values(
        _num(g("amount")),
        _num(g("term_months")),
        _num(g("stated_income")),
        _num(g("existing_debt")),
        _num(g("employment_months")),
        _num(g("applicant_age")),
        _num(g("months_since_last_default")),
        _num(inflow_90d),
        _num(outflow_90d),
    )
    return dict(zip(CREDIT_REQUEST_FEATURES, values, strict=True))


def credit_request_frame(frame: pd.DataFrame, service: FeatureService) -> pd.DataFrame:
    """``frame`` with the credit request features added (training): the frame holds
    the application columns and the service's ledger sum columns."""
    inflow_col, outflow_col = ledger_sum_columns(service)
    columns = [*APPLICATION_INPUTS, inflow_col, outflow_col]
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    inputs = [frame[c].to_numpy(dtype="float64", na_value=np.nan).tolist() for c in columns]
    rows = [credit_request_values(*r) for r in zip(*inputs, strict=True)]
    values = np.array(rows, dtype=np.float64).reshape(len(frame), len(CREDIT_REQUEST_FEATURES))
    out = frame.copy()
    for i, name in enumerate(CREDIT_REQUEST_FEATURES):
        out[name] = values[:, i]
    return out
