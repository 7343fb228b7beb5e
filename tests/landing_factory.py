"""Build small, hand-shaped landing zones for tests (the same contract as the generator)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from pitstore.core.timeutil import from_us
from pitstore.landing.schema import LEDGER_SCHEMA, SCHEMAS
from pitstore.landing.zone import LandingManifest, write_landing
from pitstore.synth.generate import (
    LABELS_SCHEMA,
    TRANSACTIONS_SCHEMA,
    GeneratorParams,
    LandingBatch,
)
from tests.reference import Event, Label
from tests.reference_ledger import LedgerEvent

# The landing contract's schemas, exactly as the generator writes them.
TX_SCHEMA = TRANSACTIONS_SCHEMA
LABEL_SCHEMA = LABELS_SCHEMA


def iso_with_offset(micros: int, offset_minutes: int = 0) -> str:
    """The instant ``micros`` written in a source system's local offset."""
    local = from_us(micros).astimezone(
        UTC
        if offset_minutes == 0
        else __import__("datetime").timezone(timedelta(minutes=offset_minutes))
    )
    text = local.isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def tx_row(e: Event, event_ts: str | None, **overrides: object) -> dict[str, object]:
    """One raw landing row for ``e`` (``overrides`` replace any column)."""
    row: dict[str, object] = {
        "transaction_id": e.transaction_id,
        "account_id": e.account_id,
        "card_id": "C" + e.account_id,
        "merchant_id": e.merchant_id,
        "merchant_category": "grocery",
        "amount": float(e.amount),
        "currency": "GBP",
        "channel": e.channel,
        "country": e.country,
        "device_id": None,
        "event_ts": event_ts,
        "ingested_at": from_us(e.ingested_us),
    }
    row.update(overrides)
    return row


def ledger_row(e: LedgerEvent, event_ts: str | None, **overrides: object) -> dict[str, object]:
    """One raw ledger landing row for ``e`` (``overrides`` replace any column)."""
    row: dict[str, object] = {
        "ledger_event_id": e.ledger_event_id,
        "account_id": e.account_id,
        "event_type": e.event_type,
        "amount": None if e.amount is None else float(e.amount),
        "balance": None if e.balance is None else float(e.balance),
        "currency": "GBP",
        "event_ts": event_ts,
        "ingested_at": from_us(e.ingested_us),
    }
    row.update(overrides)
    return row


def write_events(
    root: Path,
    start: datetime,
    days: int,
    events: Sequence[Event],
    labels: Sequence[Label] = (),
    offsets: Sequence[int] | None = None,
    ledger: Sequence[LedgerEvent] = (),
    ledger_rows: Sequence[tuple[int, int, dict[str, object]]] = (),
    raw: dict[str, list[tuple[int, int, dict[str, object]]]] | None = None,
) -> LandingManifest:
    """Land ``events``, ``labels`` and ``ledger`` events (their event_ts written in
    ``offsets`` in turn) plus raw ``ledger_rows`` (ingested_us, order, row),
    partitioned by ingestion date (UTC). ``raw``: rows of any other dataset
    (``applications``, ``credit_outcomes``), as ``(ingested_us, order, row)``."""
    params = GeneratorParams(accounts=1, merchants=1, days=days, seed=0, start=start, bad_rate=0)
    tx_rows: dict[str, list[dict[str, object]]] = defaultdict(list)
    for i, e in enumerate(sorted(events, key=lambda e: (e.ingested_us, e.source_order))):
        day = from_us(e.ingested_us).date().isoformat()
        offset = offsets[i % len(offsets)] if offsets else 0
        tx_rows[day].append(tx_row(e, iso_with_offset(e.event_us, offset)))
    label_rows: dict[str, list[dict[str, object]]] = defaultdict(list)
    for lab in sorted(labels, key=lambda x: (x.ingested_us, x.source_order)):
        day = from_us(lab.ingested_us).date().isoformat()
        label_rows[day].append(
            {
                "transaction_id": lab.transaction_id,
                "is_fraud": lab.is_fraud,
                "label_ts": from_us(lab.label_us),
                "ingested_at": from_us(lab.ingested_us),
            }
        )
    raw_ledger = list(ledger_rows)
    for i, le in enumerate(ledger):
        offset = offsets[i % len(offsets)] if offsets else 0
        raw_ledger.append(
            (le.ingested_us, le.source_order, ledger_row(le, iso_with_offset(le.event_us, offset)))
        )
    ledger_days: dict[str, list[dict[str, object]]] = defaultdict(list)
    for ingested_us, _, row in sorted(raw_ledger, key=lambda r: (r[0], r[1])):
        ledger_days[from_us(ingested_us).date().isoformat()].append(row)
    tables = {}
    for dataset, landed in (raw or {}).items():
        by_day: dict[str, list[dict[str, object]]] = defaultdict(list)
        for ingested_us, _, row in sorted(landed, key=lambda r: (r[0], r[1])):
            by_day[from_us(ingested_us).date().isoformat()].append(row)
        for day, rows in by_day.items():
            tables[(dataset, day, 0)] = pa.Table.from_pylist(rows, schema=SCHEMAS[dataset])
    for day, rows in ledger_days.items():
        tables[("ledger", day, 0)] = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
    for day, rows in tx_rows.items():
        tables[("transactions", day, 0)] = pa.Table.from_pylist(rows, schema=TX_SCHEMA)
    for day, rows in label_rows.items():
        tables[("labels", day, 0)] = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
    return write_landing(LandingBatch(params=params, tables=dict(sorted(tables.items()))), root)


def application_row(app_id: str, ingested_us: int, app_ts: str | None, **overrides: object):
    """One raw application row (valid unless ``overrides`` break it)."""
    row: dict[str, object] = {
        "application_id": app_id,
        "account_id": "A1",
        "applicant_age": 34,
        "amount": 500_000.0,
        "term_months": 24,
        "stated_income": 3_200_000.0,
        "employment_months": 40,
        "existing_debt": 25_000.0,
        "purpose": "car",
        "region": "north",
        "months_since_last_default": None,
        "application_ts": app_ts,
        "ingested_at": from_us(ingested_us),
    }
    row.update(overrides)
    return row


def outcome_row(app_id: str | None, defaulted: bool | None, label_us: int, ingested_us: int):
    return {
        "application_id": app_id,
        "defaulted": defaulted,
        "label_ts": from_us(label_us),
        "ingested_at": from_us(ingested_us),
    }
