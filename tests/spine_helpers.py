"""Helpers shared by the spine tests: random adversarial events, reading the store."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pitstore.core.spec import FeatureView
from pitstore.core.timeutil import stamp, to_us
from tests.reference import Event, Label, Row
from tests.reference_ledger import EVENT_TYPES, LedgerEvent

START = datetime(2026, 3, 27, tzinfo=UTC)  # spans the UK DST change (2026-03-29)
HOUR = 3_600_000_000
DAY = 24 * HOUR


def random_events(seed: int, days: int, n: int) -> tuple[list[Event], list[Label]]:
    """Adversarial streams: ties, events on boundaries, late events, duplicates, labels."""
    rng = random.Random(seed)
    start = to_us(START)
    events: list[Event] = []
    labels: list[Label] = []
    for i in range(n):
        if rng.random() < 0.3:
            # Exactly on an hour/day boundary: belongs to the *next* boundary's window.
            event_us = start + rng.randrange(0, days * 24) * HOUR
        elif events and rng.random() < 0.15:
            event_us = events[-1].event_us  # same-timestamp tie
        else:
            event_us = start + rng.randrange(0, days * DAY - HOUR)
        lag = (
            rng.choice([1, 5_000_000, 60_000_000])
            if rng.random() < 0.85
            else rng.randrange(HOUR, 3 * DAY)
        )
        ingested = min(event_us + lag, start + days * DAY)
        e = Event(
            transaction_id=f"T{seed}-{i}",
            account_id=f"A{rng.randrange(4)}",
            merchant_id=f"M{rng.randrange(3)}",
            amount=rng.choice([0, 1, 250, 1999, 10**9])
            if rng.random() < 0.2
            else rng.randrange(1, 50_000),
            country=rng.choice(["GB", "GB", "GB", "FR", "US"]),
            channel=rng.choice(["pos", "contactless", "ecom", "atm"]),
            event_us=event_us,
            ingested_us=ingested,
        )
        events.append(e)
        if rng.random() < 0.1:  # duplicate delivery, later
            later = min(ingested + rng.randrange(1, DAY), start + days * DAY)
            events.append(
                Event(**{**e.__dict__, "ingested_us": later, "amount": e.amount})  # same content
            )
        if rng.random() < 0.15:
            label_us = event_us + rng.randrange(HOUR, 2 * DAY)
            label_ingested = min(label_us + rng.randrange(0, 6 * HOUR), start + days * DAY)
            if label_us <= label_ingested:
                labels.append(Label(e.transaction_id, rng.random() < 0.8, label_us, label_ingested))
    return events, labels


def offline_rows(offline: Path, view: FeatureView, watermark: datetime | None = None) -> list[Row]:
    """Rows of a view's offline store (optionally only those one run created)."""
    pattern = f"run-{stamp(watermark)}.parquet" if watermark is not None else "run-*.parquet"
    files = sorted((offline / view.name).glob(pattern))
    if not files:
        return []
    names = ", ".join(f.name for f in view.features)
    con = duckdb.connect()
    rows = con.execute(
        f"select {view.entity.join_key}, epoch_us(event_timestamp), epoch_us(created_timestamp), "
        f"{names} from read_parquet({[str(f) for f in files]}) order by all"
    ).fetchall()
    con.close()
    return [tuple(r) for r in rows]


def random_ledger(seed: int, days: int, n: int, start: datetime = START) -> list[LedgerEvent]:
    """Adversarial ledger streams: events exactly on day boundaries and one microsecond
    before, same-instant ties, late arrivals (restating rows), duplicate deliveries
    (later copies, some with different content: the first copy wins), negative and
    huge balances, amounts up to the staging's bound, single events in a window."""
    rng = random.Random(seed)
    t0 = to_us(start)
    end = t0 + days * DAY
    out: list[LedgerEvent] = []
    for i in range(n):
        r = rng.random()
        if r < 0.25:
            event_us = t0 + rng.randrange(days) * DAY  # exactly midnight UTC
        elif r < 0.35:
            event_us = t0 + rng.randrange(1, days) * DAY - 1  # the last microsecond of a day
        elif out and r < 0.45:
            event_us = out[-1].event_us  # a tie
        else:
            event_us = t0 + rng.randrange(days * DAY)
        kind = rng.choice(EVENT_TYPES)
        huge = rng.random() < 0.1
        amount = balance = None
        if kind == "balance_snapshot":
            balance = (
                rng.choice([-(10**15), 10**15, -1, 0]) if huge else rng.randrange(-5 * 10**5, 10**7)
            )
        else:
            amount = rng.choice([10**15, 0, 1]) if huge else rng.randrange(1, 400_000)
        lag = (
            rng.choice([1, 60_000_000, HOUR])
            if rng.random() < 0.8
            else rng.randrange(DAY, 20 * DAY)
        )
        ingested = min(event_us + lag, end)
        e = LedgerEvent(
            f"L{seed}-{i}", f"A{rng.randrange(3)}", kind, amount, balance, event_us, ingested
        )
        out.append(e)
        if rng.random() < 0.12:  # a later copy; sometimes a "restatement" with other content
            later = min(ingested + rng.randrange(1, 3 * DAY), end)
            changed = (
                {"amount": (amount or 0) + 7} if amount is not None and rng.random() < 0.5 else {}
            )
            out.append(LedgerEvent(**{**e.__dict__, "ingested_us": later, **changed}))
    return out
