"""Pre-screening's hard rules and decision vocabulary (pure; no I/O).

The rules run before any feature is read or any model scores: each one alone
declines the application, and they read the validated application only (so
``pitstore explain`` replays them from the logged request). Every rule that
fires is listed, in id order; the debt-to-income ratio is the shared
request-time feature (``core.credit_request``), never a second formula.

=====  ==============================================================  =========
rule   condition                                                       decision
=====  ==============================================================  =========
R1     applicant under 18 (cannot enter a credit agreement)            decline
R2     debt-to-income above ``DTI_LIMIT`` (50%): other debt plus the   decline
       new loan's repayment would take over half the gross monthly
       income (``debt_to_income`` from ``core.credit_request``)
R3     a default on file in the last ``RECENT_DEFAULT_MONTHS`` (24)    decline
R4     outside the product: amount not within 1,000.00 .. 35,000.00,   decline
       or term not within 12 .. 60 months (the model never saw
       such loans: its PD there would be an extrapolation)
=====  ==============================================================  =========

When no rule fires, the PD decides (cut-offs from the model card), unless the
model cannot be trusted with what serving has; then the application is
referred to a person (``REFER_REASONS``), never declined automatically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pitstore.core.credit_request import APPLICATION_INPUTS, credit_request_features
from pitstore.serving.fallback import (
    FEATURES_MISSING,
    FEATURES_STALE,
    MODEL_ERROR,
    MODEL_UNAVAILABLE,
    REDIS_TIMEOUT,
    REDIS_UNAVAILABLE,
    UNKNOWN_ACCOUNT,
)
from pitstore.serving.scoring import APPROVE, DECLINE, REVIEW

RULES_VERSION = "credit-rules-1"
PREQUALIFIED, REFER = "pre-qualified", "refer"
DECISIONS = (PREQUALIFIED, REFER, DECLINE)
# scoring.decide's bands, in the model card's credit words
FROM_BAND = {APPROVE: PREQUALIFIED, REVIEW: REFER, DECLINE: DECLINE}

MIN_AGE = 18
DTI_LIMIT = 0.5
RECENT_DEFAULT_MONTHS = 24
MIN_AMOUNT, MAX_AMOUNT = 100_000, 3_500_000  # minor units: 1,000.00 .. 35,000.00
MIN_TERM, MAX_TERM = 12, 60

# Why the model did not decide: the fraud fallback's reasons (one vocabulary for
# the read's outcome), each with the words a referral shows.
REFER_REASONS: dict[str, str] = {
    UNKNOWN_ACCOUNT: "No account behaviour on file for this account: a person must assess it",
    FEATURES_MISSING: "Part of the account's behaviour is not available: a person must assess it",
    FEATURES_STALE: "The account's behaviour on file is out of date: a person must assess it",
    REDIS_UNAVAILABLE: "The account's behaviour could not be read: a person must assess it",
    REDIS_TIMEOUT: "The account's behaviour was not read in time: a person must assess it",
    MODEL_UNAVAILABLE: "No credit model is in service: a person must assess it",
    MODEL_ERROR: "The credit model failed on this application: a person must assess it",
}


@dataclass(frozen=True)
class RuleHit:
    rule: str
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"feature": None, "rule": self.rule, "text": self.text}


def application_inputs(app: Mapping[str, Any]) -> dict[str, Any]:
    """The application as ``core.credit_request`` reads it (APPLICATION_INPUTS)."""
    return {k: app.get(k) for k in APPLICATION_INPUTS}


def hard_rules(app: Mapping[str, Any]) -> list[RuleHit]:
    """Every rule the application breaks (empty: the model decides)."""
    hits: list[RuleHit] = []
    if app["applicant_age"] < MIN_AGE:
        hits.append(RuleHit("R1", f"Applicant is under {MIN_AGE} ({app['applicant_age']})"))
    # The ledger sums do not enter debt-to-income: it is known before any read.
    dti = credit_request_features(application_inputs(app), None, None)["debt_to_income"]
    if not math.isnan(dti) and dti > DTI_LIMIT:
        hits.append(
            RuleHit(
                "R2",
                f"Debt repayments with this loan would be {dti:.0%} of gross monthly income "
                f"(limit {DTI_LIMIT:.0%})",
            )
        )
    since = app.get("months_since_last_default")
    if since is not None and since < RECENT_DEFAULT_MONTHS:
        hits.append(
            RuleHit(
                "R3",
                f"A default {since} months ago (none allowed in the last "
                f"{RECENT_DEFAULT_MONTHS} months)",
            )
        )
    amount, term = app["amount"], app["term_months"]
    if not (MIN_AMOUNT <= amount <= MAX_AMOUNT and MIN_TERM <= term <= MAX_TERM):
        hits.append(
            RuleHit(
                "R4",
                f"Outside the product: {amount / 100:,.2f} over {term} months (offered: "
                f"{MIN_AMOUNT / 100:,.2f} to {MAX_AMOUNT / 100:,.2f}, {MIN_TERM} to "
                f"{MAX_TERM} months)",
            )
        )
    return hits


def refer_reason(reason: str) -> dict[str, Any]:
    """The reason a referral lists when the model did not decide."""
    return {"feature": None, "rule": reason, "text": REFER_REASONS[reason]}


def band_reason(pd: float, low: float, high: float) -> dict[str, Any]:
    """Why a PD is referred: it lies between the card's two cut-offs."""
    return {
        "feature": None,
        "rule": "pd_band",
        "text": f"Probability of default {pd:.1%} is between the pre-qualification "
        f"({low:.1%}) and decline ({high:.1%}) cut-offs: a person must assess it",
    }


def finite_or_none(values: Mapping[str, float]) -> dict[str, float | None]:
    """NaN (unknown, as the model reads it) logged as null: the log is strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def nan_for_none(values: Mapping[str, float | None]) -> dict[str, float]:
    """The inverse of ``finite_or_none`` (replaying a logged row)."""
    return {k: float("nan") if v is None else float(v) for k, v in values.items()}


def credit_model_input(
    columns: list[str], feast_values: Mapping[str, Any], req_values: Mapping[str, float]
) -> dict[str, float]:
    """The PD model's input row, in the card's order. Unlike fraud's, a value the
    read returned as None is NaN, as in the training frame (a standard deviation
    of one credit, say); a column the read does not carry at all is a KeyError."""
    row: dict[str, float] = {}
    for col in columns:
        if col in req_values:
            row[col] = float(req_values[col])
        elif col in feast_values:
            value = feast_values[col]
            row[col] = float("nan") if value is None else float(value)
        else:
            raise KeyError(col)
    return row
