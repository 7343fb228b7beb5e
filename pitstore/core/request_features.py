"""Request-time features: computed from the scoring request itself.

ONE function, called by training (on historical transactions) and by serving
(on the live request), so the two can never disagree on what a feature means.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pitstore.core.spec import CARD_NOT_PRESENT_CHANNELS, HOME_COUNTRY, FeatureService

REQUEST_FEATURES: tuple[str, ...] = (
    "amount",
    "amount_vs_30d_mean",
    "hour_of_day",
    "is_foreign",
    "is_card_not_present",
    "is_foreign_currency",
)


def account_30d_mean_column(service: FeatureService) -> str | None:
    """The stored feature column ``amount_vs_30d_mean`` divides by, if the service has it."""
    for view in service.views:
        if view.entity.join_key == "account_id":
            for feature in view.features:
                if feature.name == "amount_mean_30d":
                    return view.column(feature)
    return None


def request_time_features(
    txn: Mapping[str, object],
    account_30d_mean: float | None,
) -> dict[str, float]:
    """Features of one transaction request.

    ``txn`` has at least ``amount`` (integer minor units), ``event_ts`` (aware
    datetime), ``country``, ``channel``, ``currency``. ``account_30d_mean`` is the
    account's ``amount_mean_30d`` as the scorer sees it (None or 0 when unknown).
    (A "new device" flag is deliberately absent: no online store holds device
    history yet, so serving could not compute what training would see.)
    Missing context gives documented neutral values, never an exception.
    """
    amount = float(txn["amount"])  # type: ignore[arg-type]
    event_ts = txn["event_ts"]
    if not isinstance(event_ts, datetime) or event_ts.tzinfo is None:
        raise ValueError("event_ts must be a timezone-aware datetime")
    mean = account_30d_mean or 0.0
    return {
        "amount": amount,
        # 1.0 = a typical amount for this account; 0.0 when there is no history.
        "amount_vs_30d_mean": amount / mean if mean > 0 else 0.0,
        "hour_of_day": float(event_ts.utctimetuple().tm_hour),
        "is_foreign": float(txn.get("country") != HOME_COUNTRY),
        "is_card_not_present": float(txn.get("channel") in CARD_NOT_PRESENT_CHANNELS),
        "is_foreign_currency": float(txn.get("currency") not in (None, "GBP")),
    }
