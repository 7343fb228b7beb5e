"""The oracle's account ledger: its events, derived inputs and staging rules.

Plain Python, like ``tests/reference.py`` (whose ``run`` computes ledger views
from these events): it states docs/landing.md's ledger contract and the spec's
ledger inputs without sharing code with the engines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.reference import MAX_AMOUNT, _us, event_ts_us

EVENT_TYPES = (
    "salary",
    "credit",
    "direct_debit",
    "overdraft_fee",
    "missed_payment",
    "returned_payment",
    "balance_snapshot",
)


@dataclass(frozen=True)
class LedgerEvent:
    ledger_event_id: str
    account_id: str
    event_type: str
    amount: int | None  # None on a balance_snapshot
    balance: int | None  # only on a balance_snapshot
    event_us: int
    ingested_us: int
    source_order: int = 0
    source = "ledger"

    @property
    def event_id(self) -> str:
        return self.ledger_event_id

    def _amount_if(self, *kinds: str) -> int | None:
        return self.amount if self.event_type in kinds else None

    @property
    def inflow_amount(self) -> int | None:
        return self._amount_if("salary", "credit")

    @property
    def outflow_amount(self) -> int | None:
        return self._amount_if("direct_debit", "overdraft_fee")

    @property
    def overdraft_fee_amount(self) -> int | None:
        return self._amount_if("overdraft_fee")

    @property
    def is_salary(self) -> bool:
        return self.event_type == "salary"

    @property
    def is_overdrawn(self) -> bool:
        return self.event_type == "balance_snapshot" and (self.balance or 0) < 0

    @property
    def is_missed_payment(self) -> int:
        return int(self.event_type in ("missed_payment", "returned_payment"))


def _minor_units(value: Any, name: str, minimum: str | None = ">= 0") -> str | None:
    if value is None:
        return f"null {name}"
    assert isinstance(value, float)
    if math.isnan(value) or math.isinf(value):
        return f"{name} is NaN or infinite"
    if minimum == ">= 0" and value < 0:
        return f"negative {name}"
    if minimum == "> 0" and value <= 0:
        return f"{name} not positive"
    if value != math.floor(value):
        return f"{name} is not in whole minor units"
    if abs(value) > MAX_AMOUNT:
        return f"{name} out of range"
    return None


def event_time_reason(raw: str | None, ingested: datetime, name: str = "event_ts") -> str | None:
    """Why an event time column is quarantined (transactions' rules, renamed), or None."""
    parsed = event_ts_us(raw)
    if isinstance(parsed, str):
        return parsed.replace("event_ts", name)
    if parsed > _us(ingested):
        return f"{name} after ingested_at"
    return None


def quarantine_reason(row: Mapping[str, Any]) -> str | None:
    """Why a raw ledger row is quarantined (the first rule it breaks), or None."""
    for column in ("ledger_event_id", "account_id", "ingested_at", "event_type"):
        if row[column] is None:
            return f"null {column}"
    kind = row["event_type"]
    if kind not in EVENT_TYPES:
        return "unknown event_type"
    snapshot = kind == "balance_snapshot"
    if snapshot and row["amount"] is not None:
        return "amount on a balance_snapshot"
    if not snapshot and row["balance"] is not None:
        return "balance on an event other than balance_snapshot"
    reason = (
        _minor_units(row["balance"], "balance", None)
        if snapshot
        else _minor_units(row["amount"], "amount")
    )
    return reason or event_time_reason(row["event_ts"], row["ingested_at"])


LandedRow = tuple[int, int, Mapping[str, Any]]  # (ingested_us, source_order, raw row)


def landed_events(rows: Iterable[LandedRow]) -> list[LedgerEvent]:
    """The ledger events the staging keeps from raw rows."""
    events = []
    for ingested_us, order, row in rows:
        if quarantine_reason(row) is not None:
            continue
        event_us = event_ts_us(row["event_ts"])
        assert isinstance(event_us, int)
        amount, balance = row["amount"], row["balance"]
        events.append(
            LedgerEvent(
                str(row["ledger_event_id"]),
                str(row["account_id"]),
                str(row["event_type"]),
                None if amount is None else int(amount),
                None if balance is None else int(balance),
                event_us,
                ingested_us,
                order,
            )
        )
    return events
