"""The request contract of POST /v1/score, validated before anything else runs."""

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
    if req.event_ts > now + timedelta(seconds=skew_s):
        return f"event_ts {req.event_ts.isoformat()} is in the future (now {now.isoformat()})"
    if req.event_ts < now - timedelta(seconds=max_age_s):
        return (
            f"event_ts {req.event_ts.isoformat()} is more than {max_age_s} s old; "
            "late transactions are not scored online"
        )
    return None
