"""Deterministic synthetic landing zone for bank-fraud transactions and labels.

Pure functions: `generate(params)` returns in-memory arrow tables keyed by
(dataset, ingest_date, part); `pitstore.landing.zone` writes them. The same params
give the same rows in the same order, so the written parquet bytes (and their
sha256 in the manifest) are reproducible.

The stream is deliberately messy in the ways real feeds are (see DESIGN.md,
"Time has two axes"): late and duplicate deliveries, shuffled rows, source
systems stamping `event_ts` with their local offsets, a few malformed events
and one file with a drifted schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from pitstore.landing.schema import (
    DATASETS,
    LABELS_SCHEMA,
    TRANSACTIONS_SCHEMA,
    UTC_TS,
    LandingBatch,
    PartitionKey,
)
from pitstore.synth import generate_fraud as fraud
from pitstore.synth.generate_credit import CreditParams, generate_credit
from pitstore.synth.generate_fraud import (
    BAD_KINDS,
    US_PER_DAY,
    US_PER_H,
    US_PER_S,
)
from pitstore.synth.shifts import Shift, apply_shifts
from pitstore.synth.stamps import SOURCE_ZONE_P as _SOURCE_ZONE_P
from pitstore.synth.stamps import SOURCE_ZONES as _SOURCE_ZONES
from pitstore.synth.stamps import event_ts_strings as _event_ts_strings
from pitstore.synth.stamps import ids as _ids
from pitstore.synth.stamps import offset_minutes as _offset_minutes
from pitstore.synth.stamps import partitioned as _partitioned
from pitstore.synth.stamps import to_us as _to_us

__all__ = [
    "BAD_KINDS",
    "DATASETS",
    "CreditParams",
    "DRIFT_COLUMN",
    "LABELS_SCHEMA",
    "TRANSACTIONS_SCHEMA",
    "GeneratorParams",
    "LandingBatch",
    "PartitionKey",
    "generate",
]

# The one drifted file renames `amount`: an upstream release the transform
# must notice instead of silently reading a null amount.
DRIFT_COLUMN = "amount_gbp"

CATEGORIES = (
    "grocery",
    "restaurants",
    "fuel",
    "travel",
    "electronics",
    "online_retail",
    "gambling",
    "cash",
    "transport",
    "subscriptions",
)
_CAT_WEIGHT = np.array([0.22, 0.16, 0.08, 0.05, 0.06, 0.15, 0.03, 0.08, 0.10, 0.07])
_CAT_MEDIAN_CENTS = np.array([2800, 3200, 5500, 18000, 9000, 3500, 2000, 6000, 450, 1099])
_CAT_SIGMA = np.array([0.7, 0.6, 0.4, 1.0, 1.1, 0.9, 1.0, 0.6, 0.6, 0.5])
_CAT_FOREIGN = np.array([0.02, 0.03, 0.02, 0.40, 0.05, 0.20, 0.20, 0.03, 0.02, 0.30])
CHANNELS = ("pos", "contactless", "ecom", "atm")
ECOM = CHANNELS.index("ecom")
_CAT_CHANNEL_P = np.array(
    [  # pos, contactless, ecom, atm
        [0.35, 0.55, 0.10, 0],
        [0.35, 0.60, 0.05, 0],
        [0.60, 0.40, 0, 0],
        [0.20, 0.10, 0.70, 0],
        [0.40, 0.10, 0.50, 0],
        [0, 0, 1, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
        [0.10, 0.90, 0, 0],
        [0, 0, 1, 0],
    ]
)
COUNTRIES = ("GB", "FR", "DE", "ES", "IE", "NL", "US")
_COUNTRY_CURRENCY = np.array(["GBP", "EUR", "EUR", "EUR", "EUR", "EUR", "USD"], dtype=object)
_HOUR_WEIGHT = np.array(
    [
        0.2,
        0.1,
        0.08,
        0.06,
        0.06,
        0.15,
        0.5,
        1.2,
        2.2,
        2.8,
        3.2,
        3.8,
        4.6,
        4.2,
        3.8,
        3.8,
        4.2,
        4.8,
        4.8,
        4.2,
        3.4,
        2.4,
        1.4,
        0.6,
    ]
)
_WEEKDAY_WEIGHT = np.array([0.90, 0.95, 1.0, 1.05, 1.25, 1.20, 0.75])  # Mon..Sun


@dataclass(frozen=True)
class GeneratorParams:
    accounts: int = 2000
    merchants: int = 300
    days: int = 45
    seed: int = 7
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    bad_rate: float = 0.002
    shifts: tuple[Shift, ...] = ()  # documented shifts from a day (synth/shifts.py)
    # The ledger, loan applications and their outcomes (synth/generate_credit.py);
    # None: the card datasets only.
    credit: CreditParams | None = None

    def __post_init__(self) -> None:
        # ids have fixed widths (A000042, C0000421, M00017): cap to fit them.
        for name, lo, hi in (
            ("accounts", 1, 999_999),
            ("merchants", 1, 99_999),
            ("days", 1, 3660),
            ("seed", 0, 2**63 - 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < lo:
                raise ValueError(f"{name} must be >= {lo}, got {value}")
            if value > hi:
                raise ValueError(f"{name} must be <= {hi}, got {value}")
        rate = self.bad_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or not 0 <= rate < 0.5
        ):
            raise ValueError(f"bad_rate must be a number with 0 <= bad_rate < 0.5, got {rate!r}")
        object.__setattr__(self, "bad_rate", float(rate))
        shifts = tuple(self.shifts)
        if not all(isinstance(sh, Shift) for sh in shifts):
            raise TypeError(f"shifts must be synth.shifts.Shift values, got {shifts!r}")
        object.__setattr__(self, "shifts", shifts)
        if self.credit is not None and not isinstance(self.credit, CreditParams):
            raise TypeError(f"credit must be a CreditParams or None, got {self.credit!r}")
        s = self.start
        if not isinstance(s, datetime) or s.tzinfo is None or s.utcoffset() is None:
            raise ValueError(f"start must be a timezone-aware UTC datetime, got {s!r}")
        if s.utcoffset() != timedelta(0):
            raise ValueError(f"start must be in UTC (offset 0), got {s.isoformat()}")
        if (s.hour, s.minute, s.second, s.microsecond) != (0, 0, 0, 0):
            raise ValueError(f"start must be a UTC midnight, got {s.isoformat()}")
        object.__setattr__(self, "start", s.astimezone(UTC))

    @property
    def complete_through(self) -> datetime:
        """Every event ingested at or before this instant is in the batch."""
        return self.start + timedelta(days=self.days)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready params as recorded in the manifest."""
        return {
            "accounts": self.accounts,
            "merchants": self.merchants,
            "days": self.days,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "bad_rate": self.bad_rate,
            # only when set: unshifted worlds keep the manifests they always had
            **({"shifts": [sh.to_dict() for sh in self.shifts]} if self.shifts else {}),
            **({"credit": self.credit.to_dict()} if self.credit else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorParams:
        return cls(
            accounts=d["accounts"],
            merchants=d["merchants"],
            days=d["days"],
            seed=d["seed"],
            start=datetime.fromisoformat(d["start"]),
            bad_rate=d["bad_rate"],
            shifts=tuple(Shift.from_dict(sh) for sh in d.get("shifts", [])),
            credit=CreditParams.from_dict(d["credit"]) if d.get("credit") else None,
        )


def _device_ids(codes: np.ndarray) -> pa.Array:
    # Opaque ids: a bijective multiplicative hash so an attacker's device id
    # does not look different from a customer's (no leak through the format).
    uniq, inverse = np.unique(codes, return_inverse=True)
    names = np.array(
        [None if c < 0 else f"D{(int(c) * 2654435761) % 2**32:08x}" for c in uniq], dtype=object
    )
    return pa.array(names[inverse], type=pa.string())


def _genuine_events(
    rng: np.random.Generator, p: GeneratorParams, start_us: int, london: np.ndarray, base_us: int
) -> tuple[dict[str, np.ndarray], dict]:
    a, m = p.accounts, p.merchants
    # The world: merchants with a category, a home country and a popularity;
    # accounts with 1-2 cards, an activity rate and a few regular merchants.
    category = rng.choice(len(CATEGORIES), m, p=_CAT_WEIGHT / _CAT_WEIGHT.sum())
    foreign = rng.random(m) < _CAT_FOREIGN[category]
    mcountry = np.where(foreign, rng.integers(1, len(COUNTRIES), m), 0)
    # Lognormal popularity: a few big merchants, a long tail of small ones.
    popularity = np.exp(rng.normal(0.0, 1.0, m))
    popularity /= popularity.sum()
    n_cards = 1 + (rng.random(a) < 0.3)
    rate = np.exp(rng.uniform(0.0, np.log(4.0), a))  # 1-4 txns/day, log-uniform
    regulars = rng.choice(m, size=(a, 8), p=popularity)

    account = np.repeat(np.arange(a), rng.poisson(rate * p.days))
    n = account.size
    weekday = (p.start.weekday() + np.arange(p.days)) % 7
    day_w = _WEEKDAY_WEIGHT[weekday] / _WEEKDAY_WEIGHT[weekday].sum()
    local_us = (
        start_us
        + rng.choice(p.days, n, p=day_w) * US_PER_DAY
        + rng.choice(24, n, p=_HOUR_WEIGHT / _HOUR_WEIGHT.sum()) * US_PER_H
        + rng.integers(0, US_PER_H, n)
    )
    # The daily cycle is in UK local time; shift to UTC (exact but for the
    # hour around a DST switch, which only nudges the shape).
    hour = np.clip((local_us - base_us) // US_PER_H, 0, london.size - 1)
    event_us = local_us - london[hour] * 60 * US_PER_S
    regular = rng.random(n) < 0.6
    merchant = np.where(
        regular, regulars[account, rng.integers(0, 8, n)], rng.choice(m, n, p=popularity)
    )
    cat = category[merchant]
    cum = np.cumsum(_CAT_CHANNEL_P, axis=1)
    cum[:, -1] = 1.0
    channel = (rng.random(n)[:, None] > cum[cat]).sum(axis=1)
    amount = np.exp(np.log(_CAT_MEDIAN_CENTS[cat]) + _CAT_SIGMA[cat] * rng.normal(size=n))
    cash = cat == CATEGORIES.index("cash")
    amount = np.where(
        cash, np.maximum(1000, np.round(amount / 1000) * 1000), np.maximum(1, np.round(amount))
    )
    amount = np.minimum(amount, 2_500_000)
    # ecom carries a device: the usual one, sometimes the customer's second.
    second = rng.random(n) < 0.03
    device = np.where(channel == ECOM, np.where(second, a + account, account), -1)
    card = account * 10 + (rng.random(n) * n_cards[account]).astype(np.int64)
    events = {
        "account": account,
        "card": card,
        "merchant": merchant,
        "channel": channel,
        "amount": amount,
        "country": mcountry[merchant],
        "device": device,
        "event_us": event_us,
        "fraud_kind": np.zeros(n, np.int64),
    }
    world = {
        "category": category,
        "mcountry": mcountry,
        "popularity": popularity,
        "n_cards": n_cards,
    }
    return events, world


def _with_fraud(
    rng: np.random.Generator,
    p: GeneratorParams,
    events: dict,
    world: dict,
    start_us: int,
    end_us: int,
) -> dict[str, np.ndarray]:
    n = events["account"].size
    cat, pop = world["category"], world["popularity"]
    merchants = np.arange(p.merchants)

    def of(names: tuple[str, ...]) -> np.ndarray:
        sel = merchants[np.isin(cat, [CATEGORIES.index(c) for c in names])]
        return sel if sel.size else merchants  # tiny worlds: any merchant

    n_bursts = max(1, round(n * 0.0045 / 15.5))
    n_ato = max(1, round(n * 0.0018 / 2.5))
    # ~1 compromised merchant per 50k transactions, so the rate holds at any size
    n_compromised = max(1, round(min(p.merchants / 80, n / 50_000)))
    bursts = fraud.card_testing_bursts(
        rng,
        n_bursts,
        world["n_cards"],
        start_us,
        end_us,
        of(("online_retail", "subscriptions", "gambling")),
        world["mcountry"],
        ECOM,
        first_device=2 * p.accounts,
    )
    takeovers = fraud.account_takeovers(
        rng,
        n_ato,
        world["n_cards"],
        start_us,
        end_us,
        of(("electronics", "travel", "online_retail", "gambling")),
        np.arange(1, len(COUNTRIES)),
        ECOM,
        first_device=2 * p.accounts + n_bursts,
    )
    skim = of(("grocery", "restaurants", "fuel", "electronics", "online_retail"))
    events = {
        **events,
        **fraud.compromise_merchants(rng, events, n_compromised, skim, pop[skim], start_us, p.days),
    }
    allev = {k: np.concatenate([events[k], bursts[k], takeovers[k]]) for k in fraud.EVENT_COLUMNS}
    keep = (allev["event_us"] >= start_us) & (allev["event_us"] < end_us)
    # Transaction ids are issued in event-time order, like a real switch.
    order = np.lexsort((allev["card"], allev["event_us"]))
    order = order[keep[order]]
    return {k: v[order] for k, v in allev.items()}


def _take(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in cols.items()}


def _transactions_table(
    rows: dict[str, np.ndarray], zone_offsets: np.ndarray, base_us: int
) -> pa.Table:
    cat_names = np.array(CATEGORIES, dtype=object)
    return pa.Table.from_arrays(
        [
            _ids("T", 11, rows["txn"]),
            _ids("A", 6, rows["account"]),
            _ids("C", 7, rows["card"]),
            _ids("M", 5, rows["merchant"]),
            pa.array(cat_names[rows["category"]], pa.string()),
            pa.array(rows["amount"], pa.float64()),
            pa.array(_COUNTRY_CURRENCY[rows["country"]], pa.string()),
            pa.array(np.array(CHANNELS, dtype=object)[rows["channel"]], pa.string()),
            pa.array(np.array(COUNTRIES, dtype=object)[rows["country"]], pa.string()),
            _device_ids(rows["device"]),
            _event_ts_strings(
                rows["event_us"], rows["zone"], rows["ts_style"], base_us, zone_offsets
            ),
            pa.array(rows["ingested_us"], UTC_TS),
        ],
        schema=TRANSACTIONS_SCHEMA,
    )


def generate(params: GeneratorParams) -> LandingBatch:
    """Build the whole landing zone in memory; deterministic for `params`."""
    p = params
    rng = np.random.Generator(np.random.PCG64(p.seed))
    start_us = _to_us(p.start)
    end_us = start_us + p.days * US_PER_DAY
    base_us = start_us - 2 * US_PER_DAY  # offset tables cover a margin each side
    zone_offsets = np.stack([_offset_minutes(z, base_us, (p.days + 8) * 24) for z in _SOURCE_ZONES])
    genuine, world = _genuine_events(rng, p, start_us, zone_offsets[1], base_us)
    ev = _with_fraud(rng, p, genuine, world, start_us, end_us)
    n = ev["account"].size
    is_fraud = ev["fraud_kind"] != fraud.GENUINE

    # Ingestion lag: seconds to minutes normally, hours to 3 days when late.
    lag = np.clip(np.exp(rng.normal(np.log(15.0), 1.2, n)), 1.0, 1800.0) * US_PER_S
    late = rng.random(n) < 0.03
    late_lag = np.exp(rng.uniform(0.0, np.log(72.0), n)) * US_PER_H
    rows = {
        **ev,
        "txn": np.arange(n),
        "ingested_us": ev["event_us"] + np.where(late, late_lag, lag).astype(np.int64),
        "zone": rng.choice(len(_SOURCE_ZONES), n, p=_SOURCE_ZONE_P),
        "ts_style": np.zeros(n, np.int64),
        "category": world["category"][ev["merchant"]],
        "bad_kind": np.full(n, -1, np.int64),
        "copy": np.zeros(n, np.int64),
    }
    lab = fraud.labels(rng, ev["event_us"], is_fraud)

    # Duplicate deliveries: identical content, ingested again later.
    dup_src = rng.choice(n, round(0.01 * n), replace=False)
    dups = _take(rows, dup_src)
    dups["ingested_us"] = (
        dups["ingested_us"]
        + np.exp(rng.uniform(np.log(30.0), np.log(12 * 3600.0), dup_src.size)).astype(np.int64)
        * US_PER_S
    )
    dups["copy"] = np.ones(dup_src.size, np.int64)
    parts = [rows, dups]
    landed = np.flatnonzero(rows["ingested_us"] <= end_us)
    if p.bad_rate > 0 and landed.size:
        n_bad = max(len(BAD_KINDS), round(p.bad_rate * n))
        bad = fraud.bad_events(rng, rows, n_bad, landed, first_txn=n)
        bad["copy"] = np.full(n_bad, 2, np.int64)
        parts.append(bad)
    allrows = {k: np.concatenate([r[k] for r in parts]) for k in rows}
    # Events ingested after complete_through have not arrived yet.
    allrows = _take(allrows, np.flatnonzero(allrows["ingested_us"] <= end_us))
    allrows = apply_shifts(p.shifts, allrows, start_us, p.seed, CATEGORIES, CHANNELS, fraud.GENUINE)
    day = (allrows["ingested_us"] - start_us) // US_PER_DAY
    part = np.zeros(day.size, np.int64)
    if p.bad_rate > 0:
        # Schema drift: up to 20 quiet genuine events of one day go to a second
        # file whose `amount` column is renamed. They are in no other file.
        drift_day = rng.integers(0, p.days)
        quiet = np.ones(n + 1, bool)
        quiet[dup_src] = quiet[lab["index"]] = False
        txn = np.where((allrows["txn"] < 0) | (allrows["txn"] >= n), n, allrows["txn"])
        cand = np.flatnonzero(
            (day == drift_day)
            & (allrows["copy"] == 0)
            & (allrows["fraud_kind"] == fraud.GENUINE)
            & quiet[txn]
        )
        part[rng.choice(cand, min(20, cand.size), replace=False)] = 1
    tx_table = _transactions_table(allrows, zone_offsets, base_us)
    tables = _partitioned(rng, "transactions", tx_table, day, part, p.start.date())
    if p.bad_rate > 0 and not any(k[2] == 1 for k in tables):
        # No candidate rows (tiny worlds): the drifted file still exists, empty.
        key = ("transactions", (p.start + timedelta(days=int(drift_day))).date().isoformat(), 1)
        tables[key] = TRANSACTIONS_SCHEMA.empty_table()
    for key in [k for k in tables if k[2] == 1]:
        tables[key] = tables[key].rename_columns(
            [DRIFT_COLUMN if c == "amount" else c for c in TRANSACTIONS_SCHEMA.names]
        )

    keep = lab["ingested_us"] <= end_us
    lab = {k: v[keep] for k, v in lab.items()}
    labels = pa.Table.from_arrays(
        [
            _ids("T", 11, lab["index"]),
            pa.array(lab["is_fraud"], pa.bool_()),
            pa.array(lab["label_us"], UTC_TS),
            pa.array(lab["ingested_us"], UTC_TS),
        ],
        schema=LABELS_SCHEMA,
    )
    ldays = (lab["ingested_us"] - start_us) // US_PER_DAY
    tables.update(_partitioned(rng, "labels", labels, ldays, np.zeros_like(ldays), p.start.date()))

    orig = allrows["copy"] == 0
    stats = {
        "transaction_rows": int(day.size),
        "transactions": int(orig.sum()),
        "fraud": int((allrows["fraud_kind"][orig] != fraud.GENUINE).sum()),
        "late": int(((allrows["ingested_us"] - allrows["event_us"])[orig] > US_PER_H).sum()),
        "duplicates": int((allrows["copy"] == 1).sum()),
        "bad": int((allrows["copy"] == 2).sum()),
        "drift_rows": int((part == 1).sum()),
        "label_rows": int(lab["index"].size),
        "fraud_labels": int(lab["is_fraud"].sum()),
        "not_arrived": int(n - orig.sum()),
    }
    for k, name in enumerate(("card_testing", "account_takeover", "compromised_merchant"), 1):
        stats[f"fraud_{name}"] = int((allrows["fraud_kind"][orig] == k).sum())
    if p.credit is not None:
        credit_tables, credit_stats = generate_credit(
            p.credit, p.accounts, p.seed, p.start, p.days, p.bad_rate
        )
        tables.update(credit_tables)
        stats.update(credit_stats)
    return LandingBatch(params=p, tables=dict(sorted(tables.items())), stats=stats)
