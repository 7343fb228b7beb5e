"""Deterministic synthetic credit data: the account ledger, loan applications, outcomes.

The customers are the card world's accounts (same ``A000042`` ids). Their
latent profiles and ledger are in `credit_world`, the applications and the
default mechanism in `credit_outcomes`; this module delivers them the way a
bank's feeds would (docs/landing.md, "The synthetic credit world"):

- ledger: a nightly export, ingested 01:00-05:00 UTC the next day; 2% of rows
  are late (1 to 5 more days); 1% are delivered twice (same ledger_event_id,
  hours to two days later); ``bad_rate`` of the rows are malformed copies with
  fresh ids (every kind in LEDGER_BAD_KINDS at least once when bad_rate > 0);
  event_ts stamped in UTC ("Z") or UK local time;
- applications: seconds to minutes after the customer applied, 3% late (hours
  to 3 days), 1% duplicated, ``bad_rate`` malformed copies (APPLICATION_BAD_KINDS);
  application_ts stamped in the zones the card sources use;
- outcomes: 1 to 10 days after label_ts, 1% duplicated. Only what has been
  delivered by complete_through is in the batch: no outcome with a label_ts
  after it, no loan's future.

The credit world starts ``history_days`` before the card world's start and ends
with it at complete_through; it draws from its own random stream, so turning
credit on leaves the card datasets byte for byte as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from pitstore.landing.schema import (
    APPLICATIONS_SCHEMA,
    CREDIT_OUTCOMES_SCHEMA,
    LEDGER_EVENT_TYPES,
    LEDGER_SCHEMA,
    UTC_TS,
    PartitionKey,
)
from pitstore.synth import credit_outcomes as co
from pitstore.synth import credit_world as cw
from pitstore.synth.generate_fraud import TS_NAIVE, TS_OK, TS_UNPARSEABLE, US_PER_DAY, US_PER_H
from pitstore.synth.stamps import (
    SOURCE_ZONE_P,
    event_ts_strings,
    ids,
    partitioned,
    to_us,
    zone_offsets,
)

LEDGER_BAD_KINDS = (
    "null_ledger_event_id",
    "null_account_id",
    "null_amount",
    "negative_amount",
    "unknown_event_type",
    "naive_event_ts",
    "unparseable_event_ts",
    "event_ts_after_ingested_at",
)
APPLICATION_BAD_KINDS = (
    "null_application_id",
    "null_account_id",
    "null_amount",
    "unparseable_application_ts",
)
UNKNOWN_EVENT_TYPE = "fx_adjustment"  # not in LEDGER_EVENT_TYPES
_LEDGER_ZONE_P = np.array([0.6, 0.4, 0.0, 0.0])  # the core banking system: UTC or UK time
_DUP_RATE = 0.01
_US_PER_MIN = 60_000_000


@dataclass(frozen=True)
class CreditParams:
    """The credit part of a synthetic world."""

    history_days: int = 900  # ledger history before the card world's start
    applications_per_year: float = 0.9  # loan applications per customer and year

    def __post_init__(self) -> None:
        h = self.history_days
        if not isinstance(h, int) or isinstance(h, bool) or not 0 <= h <= 3660:
            raise ValueError(f"credit history_days must be an int from 0 to 3660, got {h!r}")
        r = self.applications_per_year
        if (
            isinstance(r, bool)
            or not isinstance(r, (int, float))
            or not math.isfinite(r)
            or not 0 <= r <= 12
        ):
            raise ValueError(f"credit applications_per_year must be from 0 to 12, got {r!r}")
        object.__setattr__(self, "applications_per_year", float(r))

    def to_dict(self) -> dict[str, Any]:
        return {
            "history_days": self.history_days,
            "applications_per_year": self.applications_per_year,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CreditParams:
        return cls(history_days=d["history_days"], applications_per_year=d["applications_per_year"])


def _duplicates(
    rng: np.random.Generator, rows: dict[str, np.ndarray], hi_h: float
) -> dict[str, np.ndarray]:
    """A share of rows delivered again, identical, 30 s to `hi_h` hours later."""
    n = rows["id"].size
    src = np.sort(rng.choice(n, round(_DUP_RATE * n), replace=False))
    dups = {k: v[src] for k, v in rows.items()}
    later = np.exp(rng.uniform(np.log(30.0), np.log(hi_h * 3600.0), src.size)) * 1e6
    dups["ingested_us"] = dups["ingested_us"] + later.astype(np.int64)
    dups["copy"] = np.ones(src.size, np.int64)
    return dups


def _bad_copies(
    rng: np.random.Generator,
    rows: dict[str, np.ndarray],
    kinds: tuple[str, ...],
    n_bad: int,
    first_id: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Copies of landed rows, each broken in one way (returned with the kind), fresh ids."""
    eligible = np.flatnonzero(rows["amount"] >= 0)  # not snapshots: amount carries the break
    src = rng.choice(eligible, n_bad)
    bad = {k: v[src] for k, v in rows.items()}
    kind = np.concatenate([np.arange(len(kinds)), rng.integers(0, len(kinds), n_bad - len(kinds))])
    bad["id"] = first_id + np.arange(n_bad)
    bad["copy"] = np.full(n_bad, 2, np.int64)
    for name, col, value in (
        ("null_ledger_event_id", "id", -1),
        ("null_application_id", "id", -1),
        ("null_account_id", "account", -1),
        ("null_amount", "amount", np.nan),
        ("naive_event_ts", "ts_style", TS_NAIVE),
        ("unparseable_event_ts", "ts_style", TS_UNPARSEABLE),
        ("unparseable_application_ts", "ts_style", TS_UNPARSEABLE),
    ):
        if name in kinds:
            bad[col] = np.where(kind == kinds.index(name), value, bad[col])
    if "negative_amount" in kinds:
        bad["amount"] = np.where(
            kind == kinds.index("negative_amount"), -bad["amount"], bad["amount"]
        )
    if "event_ts_after_ingested_at" in kinds:
        future = kind == kinds.index("event_ts_after_ingested_at")
        later = bad["ingested_us"] + rng.integers(US_PER_H, 2 * US_PER_DAY, n_bad)
        bad["event_us"] = np.where(future, later, bad["event_us"])
    return bad, kind


def _stack(parts: list[dict[str, np.ndarray]], end_us: int) -> dict[str, np.ndarray]:
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    landed = np.flatnonzero(rows["ingested_us"] <= end_us)  # the rest has not arrived yet
    return {k: v[landed] for k, v in rows.items()}


def _n_bad(bad_rate: float, n: int, kinds: tuple[str, ...]) -> int:
    return max(len(kinds), round(bad_rate * n)) if bad_rate > 0 and n else 0


def _ledger_rows(
    rng: np.random.Generator, led: dict[str, np.ndarray], bad_rate: float, end_us: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    n = led["account"].size
    day_end = (led["event_us"] // US_PER_DAY + 1) * US_PER_DAY
    late = rng.random(n) < 0.02
    lag = rng.integers(US_PER_H, 5 * US_PER_H, n) + np.where(
        late, rng.integers(1, 6, n) * US_PER_DAY, 0
    )
    rows = {
        "id": np.arange(n),  # issued in event-time order, like a real ledger
        "account": led["account"],
        "kind": led["kind"],
        "amount": np.where(led["kind"] == cw.SNAPSHOT, np.nan, led["amount"]).astype(np.float64),
        "balance": np.where(led["kind"] == cw.SNAPSHOT, led["balance"], np.nan).astype(np.float64),
        "event_us": led["event_us"],
        "ingested_us": day_end + lag,
        "zone": rng.choice(4, n, p=_LEDGER_ZONE_P),
        "ts_style": np.full(n, TS_OK),
        "late": late,
        "copy": np.zeros(n, np.int64),
    }
    parts = [rows, _duplicates(rng, rows, 48.0)]
    n_bad = _n_bad(bad_rate, n, LEDGER_BAD_KINDS)
    if n_bad:
        bad, kind = _bad_copies(rng, rows, LEDGER_BAD_KINDS, n_bad, first_id=n)
        bad["kind"] = np.where(
            kind == LEDGER_BAD_KINDS.index("unknown_event_type"), -1, bad["kind"]
        )
        parts.append(bad)
    out = _stack(parts, end_us)
    orig = out["copy"] == 0
    stats = {
        "ledger_rows": int(out["id"].size),
        "ledger_events": int(orig.sum()),
        "ledger_late": int((out["late"] & orig).sum()),
        "ledger_duplicates": int((out["copy"] == 1).sum()),
        "ledger_bad": int((out["copy"] == 2).sum()),
        "ledger_not_arrived": n - int(orig.sum()),
    }
    return out, stats


def _application_rows(
    rng: np.random.Generator, app: dict[str, np.ndarray], bad_rate: float, end_us: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    m = app["account"].size
    lag = np.clip(np.exp(rng.normal(np.log(20.0), 1.2, m)), 1.0, 1800.0) * 1e6
    late = rng.random(m) < 0.03
    late_lag = np.exp(rng.uniform(0.0, np.log(72.0), m)) * US_PER_H
    rows = {
        **app,
        "id": np.arange(m),
        "amount": app["amount"].astype(np.float64),
        "ingested_us": app["event_us"] + np.where(late, late_lag, lag).astype(np.int64),
        "zone": rng.choice(4, m, p=SOURCE_ZONE_P),
        "ts_style": np.full(m, TS_OK),
        "late": late,
        "copy": np.zeros(m, np.int64),
    }
    parts = [rows, _duplicates(rng, rows, 12.0)]
    n_bad = _n_bad(bad_rate, m, APPLICATION_BAD_KINDS)
    if n_bad:
        parts.append(_bad_copies(rng, rows, APPLICATION_BAD_KINDS, n_bad, first_id=m)[0])
    out = _stack(parts, end_us)
    stats = {
        "applications": int((out["copy"] == 0).sum()),
        "application_rows": int(out["id"].size),
        "application_late": int((out["late"] & (out["copy"] == 0)).sum()),
        "application_duplicates": int((out["copy"] == 1).sum()),
        "application_bad": int((out["copy"] == 2).sum()),
    }
    return out, stats


def _outcome_rows(
    rng: np.random.Generator, outc: dict[str, np.ndarray], end_us: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    booked = np.flatnonzero(outc["booked"])
    label_us = outc["label_us"][booked]
    rows = {
        "id": booked,
        "defaulted": outc["defaulted"][booked],
        "label_us": label_us,
        "ingested_us": label_us + rng.integers(US_PER_DAY, 10 * US_PER_DAY, booked.size),
        "copy": np.zeros(booked.size, np.int64),
    }
    out = _stack([rows, _duplicates(rng, rows, 48.0)], end_us)
    orig = out["copy"] == 0
    stats = {
        "credit_outcome_rows": int(out["id"].size),
        "credit_outcomes": int(orig.sum()),
        "credit_defaults": int(out["defaulted"][orig].sum()),
        "credit_booked": int(booked.size),
    }
    return out, stats


def generate_credit(
    credit: CreditParams, accounts: int, seed: int, start: datetime, days: int, bad_rate: float
) -> tuple[dict[PartitionKey, pa.Table], dict[str, int]]:
    """The ledger, applications and credit_outcomes partitions, and their stats."""
    rng = np.random.default_rng([seed, 0xC4ED17])  # its own stream: the card world is unchanged
    n_days = credit.history_days + days
    first = start - timedelta(days=credit.history_days)
    first_us, end_us = to_us(first), n_days * US_PER_DAY
    profiles = cw.draw_profiles(rng, accounts, n_days)
    led = cw.simulate_ledger(rng, profiles, np.datetime64(first.date(), "D"), n_days)
    app = co.draw_applications(rng, profiles, n_days, credit.applications_per_year)
    outc = co.outcomes(rng, app, co.behaviour(led, app["account"], app["event_us"]))

    offsets = zone_offsets(first_us - 2 * US_PER_DAY, n_days + 8)
    base = first_us - 2 * US_PER_DAY

    def ts(rows: dict[str, np.ndarray]) -> pa.Array:
        return event_ts_strings(
            first_us + rows["event_us"], rows["zone"], rows["ts_style"], base, offsets
        )

    def utc(us: np.ndarray) -> pa.Array:
        return pa.array(first_us + us, UTC_TS)

    def money(x: np.ndarray) -> pa.Array:
        return pa.array(x, pa.float64(), mask=np.isnan(x))

    lr, lstats = _ledger_rows(rng, led, bad_rate, end_us)
    types = np.array([*LEDGER_EVENT_TYPES, UNKNOWN_EVENT_TYPE], dtype=object)
    ledger = pa.Table.from_arrays(
        [
            ids("LE", 10, lr["id"]),
            ids("A", 6, lr["account"]),
            pa.array(types[lr["kind"]], pa.string()),
            money(lr["amount"]),
            money(lr["balance"]),
            pa.array(np.full(lr["id"].size, "GBP", dtype=object), pa.string()),
            ts(lr),
            utc(lr["ingested_us"]),
        ],
        schema=LEDGER_SCHEMA,
    )
    ar, astats = _application_rows(rng, app, bad_rate, end_us)
    since = ar["months_since_default"]
    applications = pa.Table.from_arrays(
        [
            ids("APP", 7, ar["id"]),
            ids("A", 6, ar["account"]),
            pa.array(ar["age"], pa.int32()),
            money(ar["amount"]),
            pa.array(ar["term"], pa.int32()),
            pa.array(ar["stated_income"], pa.float64()),
            pa.array(ar["employment"], pa.int32()),
            pa.array(ar["existing_debt"], pa.float64()),
            pa.array(np.array(co.PURPOSES, dtype=object)[ar["purpose"]], pa.string()),
            pa.array(np.array(cw.REGIONS, dtype=object)[ar["region"]], pa.string()),
            pa.array(since, pa.int32(), mask=since < 0),
            ts(ar),
            utc(ar["ingested_us"]),
        ],
        schema=APPLICATIONS_SCHEMA,
    )
    orow, ostats = _outcome_rows(rng, outc, end_us)
    outcomes = pa.Table.from_arrays(
        [
            ids("APP", 7, orow["id"]),
            pa.array(orow["defaulted"], pa.bool_()),
            utc(orow["label_us"]),
            utc(orow["ingested_us"]),
        ],
        schema=CREDIT_OUTCOMES_SCHEMA,
    )
    day0: date = first.date()
    tables: dict[PartitionKey, pa.Table] = {}
    for name, table, rows in (
        ("ledger", ledger, lr),
        ("applications", applications, ar),
        ("credit_outcomes", outcomes, orow),
    ):
        day = rows["ingested_us"] // US_PER_DAY
        tables.update(partitioned(rng, name, table, day, np.zeros_like(day), day0))
    stats = {
        **lstats,
        **astats,
        **ostats,
        "credit_applications_generated": int(app["account"].size),
    }
    return tables, stats
