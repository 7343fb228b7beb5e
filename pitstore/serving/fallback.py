"""The deterministic fallback decision: rules on the request alone.

Used when the model cannot be trusted with what serving has: Redis down or
slower than its share of the budget, feature views missing or older than their
TTL, an account with no history at all, or no model loaded. The rules only read
the validated request, so the same request always gets the same fallback
decision, whatever the state of Redis — and ``pitstore explain`` can replay it.

Rules (amounts in minor units of the request currency), first match wins:

=====  ==========================================================  ========
rule   condition                                                   decision
=====  ==========================================================  ========
F1     amount >= 500,000 (5,000.00)                                decline
F2     card not present AND abroad AND amount >= 100,000           decline
F3     amount >= 100,000 (1,000.00)                                review
F4     card not present AND (abroad OR foreign currency)           review
F5     ATM withdrawal abroad                                       review
F6     unknown account (no history) AND card not present           review
F0     anything else                                               approve
=====  ==========================================================  ========

An unknown account (Redis reachable, no row for the account in any account
view) is a normal event — a new customer — so it is not an error: it takes this
fallback path with reason ``unknown_account`` and rule F6 adds caution for
card-not-present use of a brand-new account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pitstore.core.spec import CARD_NOT_PRESENT_CHANNELS, HOME_COUNTRY

# Fallback reasons (also the label values of the fallbacks metric).
REDIS_UNAVAILABLE = "redis_unavailable"
REDIS_TIMEOUT = "redis_timeout"
FEATURES_MISSING = "features_missing"
FEATURES_STALE = "features_stale"
UNKNOWN_ACCOUNT = "unknown_account"
MODEL_UNAVAILABLE = "model_unavailable"
MODEL_ERROR = "model_error"
REASONS = (
    REDIS_UNAVAILABLE,
    REDIS_TIMEOUT,
    FEATURES_MISSING,
    FEATURES_STALE,
    UNKNOWN_ACCOUNT,
    MODEL_UNAVAILABLE,
    MODEL_ERROR,
)

HOME_CURRENCY = "GBP"
DECLINE_AMOUNT = 500_000
HIGH_AMOUNT = 100_000
RULES_VERSION = "fallback-rules-1"


@dataclass(frozen=True)
class FallbackDecision:
    decision: str
    rule: str
    text: str


def fallback_decision(txn: Mapping[str, object], reason: str) -> FallbackDecision:
    amount = float(txn["amount"])  # type: ignore[arg-type]
    cnp = txn.get("channel") in CARD_NOT_PRESENT_CHANNELS
    abroad = txn.get("country") != HOME_COUNTRY
    foreign_ccy = txn.get("currency") != HOME_CURRENCY
    if amount >= DECLINE_AMOUNT:
        return FallbackDecision("decline", "F1", "Very large amount while scoring is degraded")
    if cnp and abroad and amount >= HIGH_AMOUNT:
        return FallbackDecision("decline", "F2", "Large card-not-present payment abroad")
    if amount >= HIGH_AMOUNT:
        return FallbackDecision("review", "F3", "Large amount while scoring is degraded")
    if cnp and (abroad or foreign_ccy):
        return FallbackDecision("review", "F4", "Card-not-present payment abroad or in FX")
    if txn.get("channel") == "atm" and abroad:
        return FallbackDecision("review", "F5", "ATM withdrawal abroad")
    if reason == UNKNOWN_ACCOUNT and cnp:
        return FallbackDecision("review", "F6", "New account used card-not-present")
    return FallbackDecision("approve", "F0", "No fallback rule matched")
