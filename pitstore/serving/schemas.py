"""The request contracts of POST /v1/score and POST /v1/prescreen, validated
before anything else runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from pitstore.core.timeutil import WatermarkError, parse_utc

# Minor units (pence, cents). 1 .. 1,000,000.00: anything larger is not a card payment.
MAX_AMOUNT_MINOR = 100_000_000
CURRENCIES = ("GBP", "EUR", "USD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD", "JPY")
CHANNELS = ("pos", "contactless", "ecom", "atm")

Key = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class ScoreRequest(BaseModel):
    """One card transaction, as the payment switch sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: Key
    account_id: Key
    card_id: Key
    merchant_id: Key
    merchant_category: Annotated[
        StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    ]
    amount: Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT_MINOR)] = Field(
        description="Integer minor units (pence/cents), 1 .. 100,000,000."
    )
    currency: Literal[CURRENCIES]  # type: ignore[valid-type]
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    country: Annotated[StrictStr, Field(pattern=r"^[A-Z]{2}$")]
    device_id: Annotated[StrictStr, Field(max_length=128)] | None = None
    event_ts: datetime = Field(
        description="ISO-8601 with a UTC offset, e.g. 2026-01-05T10:15:00Z (naive is refused)."
    )

    @field_validator("event_ts", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> datetime:
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 string with a UTC offset")
        try:
            return parse_utc(value, "event_ts")
        except WatermarkError as exc:
            raise ValueError(str(exc)) from exc

    def txn(self) -> dict[str, Any]:
        """The transaction as request_time_features() and the fallback rules read it."""
        return self.model_dump()

    def logged(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def time_window_error(req: ScoreRequest, now: datetime, skew_s: int, max_age_s: int) -> str | None:
    """Why event_ts cannot be scored now (far future / too old), or None."""
    return ts_window_error(req.event_ts, "event_ts", now, skew_s, max_age_s)


def ts_window_error(
    ts: datetime, name: str, now: datetime, skew_s: int, max_age_s: int
) -> str | None:
    """Why ``ts`` cannot be decided on now (far future / too old), or None."""
    if ts > now + timedelta(seconds=skew_s):
        return f"{name} {ts.isoformat()} is in the future (now {now.isoformat()})"
    if ts < now - timedelta(seconds=max_age_s):
        return (
            f"{name} {ts.isoformat()} is more than {max_age_s} s old; "
            "late requests are not decided online"
        )
    return None


# --- POST /v1/prescreen -------------------------------------------------------------
# Money in integral minor units, as APPLICATIONS_SCHEMA lands it. The bounds only
# refuse what is not an application at all (a negative income, an age of 400);
# what the product does not offer is a rule (R4, ``serving.credit_rules``), and
# its decline is logged like any other decision.
MAX_MONEY_MINOR = 10**11  # 1,000,000,000.00
Count = Annotated[StrictInt, Field(ge=0, le=1200)]
Money = Annotated[StrictInt, Field(ge=0, le=MAX_MONEY_MINOR)]
Label = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 _.&'\-]+$")]


class PrescreenRequest(BaseModel):
    """One loan application (the APPLICATIONS_SCHEMA fields a customer gives)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    application_id: Key
    account_id: Key
    applicant_age: Annotated[StrictInt, Field(ge=0, le=130)] = Field(
        description="Whole years at application."
    )
    amount: Annotated[StrictInt, Field(ge=1, le=MAX_MONEY_MINOR)] = Field(
        description="Requested principal, integer minor units."
    )
    term_months: Annotated[StrictInt, Field(ge=1, le=600)]
    stated_income: Money = Field(description="ANNUAL gross income, integer minor units.")
    employment_months: Count = Field(description="Months in the current employment.")
    existing_debt: Money = Field(
        description="MONTHLY repayments on other debt, integer minor units."
    )
    purpose: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
    region: Label
    months_since_last_default: Count | None = Field(
        description="From the credit bureau; null when no default is on file."
    )
    application_ts: datetime | None = Field(
        None,
        description="When the customer applied: ISO-8601 with a UTC offset; default now. "
        "Features are read as of this time.",
    )

    @field_validator("application_ts", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 string with a UTC offset")
        try:
            return parse_utc(value, "application_ts")
        except WatermarkError as exc:
            raise ValueError(str(exc)) from exc

    def logged(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- responses (documentation: /openapi.json) -------------------------------------
# The service answers with the audit record itself (``serving.service``), so these
# models describe that record; extra keys (added by later record versions) are allowed.


class ModelReason(BaseModel):
    """An input that raised the fraud score (a model decision)."""

    feature: str = Field(description="The model input (a Feast column or a request feature).")
    value: float | None = Field(description="Its value in this request.")
    typical: float | None = Field(
        description="The training rows' median of this input; null if the card has none."
    )
    percentile: float | None = Field(
        None, description="About what % of training rows had this input at or below the value."
    )
    contribution: float = Field(
        description="How much this input raised the score, in the explanation's unit "
        "(log-odds for tree_shap_path_dependent), rounded to 6 decimals."
    )
    text: str = Field(description="The reason in plain words, for an analyst.")


class FallbackReason(BaseModel):
    """The rule that decided (a fallback decision)."""

    feature: None = None
    rule: str = Field(description="The fallback rule id, e.g. F6.")
    text: str


class Explanation(BaseModel):
    """How the reasons' contributions were computed."""

    model_config = ConfigDict(extra="allow")

    method: Literal["tree_shap_path_dependent", "median_substitution"]
    unit: Literal["log_odds", "probability"]
    raw_score: float | None = Field(
        None, description="The booster's log-odds t before calibration (tree_shap only)."
    )
    expected_value: float | None = Field(
        None,
        description="expected_value + sum of every input's contribution = raw_score "
        "(only the top reasons are listed).",
    )
    calibration_increasing: bool | None = Field(
        None, description="The calibrated score rises with raw_score (positive = riskier)."
    )


class ViewRead(BaseModel):
    status: Literal["ok", "stale", "missing"]
    event_timestamp: str | None
    age_seconds: float | None
    values: dict[str, float | int | None]


class DecisionRecord(BaseModel):
    """A decision, exactly as appended (durably) to the audit log before it was returned."""

    model_config = ConfigDict(extra="allow")

    decision_id: str
    decided_at: str = Field(description="ISO-8601, UTC.")
    transaction_id: str
    decision: Literal["approve", "review", "decline"]
    score: float | None = Field(description="Calibrated fraud probability; null for a fallback.")
    fallback: Literal[False] | str = Field(description="false, or why the model was not used.")
    fallback_rule: str | None
    fallback_rules_version: str
    model_version: str | None
    feature_service: str | None
    threshold: float | None
    review_band: list[float] | None = Field(description="[low, high]: review, then decline.")
    request: dict[str, Any] = Field(description="The request as received (ScoreRequest).")
    features: dict[str, ViewRead] = Field(description="Per feature view, what was read.")
    request_features: dict[str, float] | None
    model_input: dict[str, float] | None
    reasons: list[ModelReason | FallbackReason]
    explanation: Explanation | None = None
    budget_ms: int
    latency_ms: float


class ErrorResponse(BaseModel):
    error: str
    fields: list[dict[str, str]] | None = None
    retry: bool | None = None
