"""The synthetic credit world: ledger, applications and outcomes as they land."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pitstore.landing.schema import LEDGER_EVENT_TYPES, SCHEMAS
from pitstore.landing.zone import read_manifest, validate_for_watermark, write_landing
from pitstore.synth.generate import CreditParams, GeneratorParams, LandingBatch, generate
from pitstore.synth.generate_credit import UNKNOWN_EVENT_TYPE

CREDIT_DATASETS = ("ledger", "applications", "credit_outcomes")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
# Big enough for stable rates, small enough for a unit test (about a second).
WORLD = GeneratorParams(accounts=800, merchants=20, days=30, seed=3, credit=CreditParams())
# The smallest world with every dataset: applications from day 180, outcomes a year later.
TINY = GeneratorParams(
    accounts=120, merchants=10, days=10, seed=9, credit=CreditParams(history_days=560)
)


@pytest.fixture(scope="module")
def world() -> LandingBatch:
    return generate(WORLD)


def frame(b: LandingBatch, dataset: str) -> pd.DataFrame:
    return pa.concat_tables([t for k, t in b.tables.items() if k[0] == dataset]).to_pandas()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def clean_ledger(b: LandingBatch) -> pd.DataFrame:
    """First delivery of each well-formed ledger row, with parsed times."""
    led = frame(b, "ledger")
    ok = (
        led.ledger_event_id.notna()
        & led.account_id.notna()
        & led.event_type.isin(LEDGER_EVENT_TYPES)
        & led.event_ts.str.match(ISO)
        & ((led.event_type == "balance_snapshot") | (led.amount >= 0))
    )
    led = led[ok].sort_values("ingested_at").drop_duplicates("ledger_event_id")
    led["ts"] = pd.to_datetime(led.event_ts, format="ISO8601", utc=True)
    return led[led.ts <= led.ingested_at]


def known_outcomes(b: LandingBatch) -> pd.DataFrame:
    """Each labelled application (first delivery) with its applicant fields."""
    apps = frame(b, "applications").drop_duplicates("application_id")
    apps = apps[apps.application_ts.str.match(ISO) & apps.account_id.notna()].copy()
    apps["ts"] = pd.to_datetime(apps.application_ts, format="ISO8601", utc=True)
    out = frame(b, "credit_outcomes").drop_duplicates("application_id")
    return apps.merge(out, on="application_id")


# --- params -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history_days": -1}, "credit history_days must be an int from 0 to 3660, got -1"),
        ({"history_days": 4000}, "history_days"),
        ({"history_days": 1.5}, "history_days"),
        ({"applications_per_year": -0.1}, "applications_per_year"),
        ({"applications_per_year": float("nan")}, "applications_per_year"),
        ({"applications_per_year": 13}, "applications_per_year"),
    ],
)
def test_bad_credit_params_fail_with_one_clear_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as exc:
        CreditParams(**kwargs)
    assert "\n" not in str(exc.value)


def test_credit_must_be_credit_params() -> None:
    with pytest.raises(TypeError, match="credit must be a CreditParams"):
        GeneratorParams(credit={"history_days": 10})  # type: ignore[arg-type]


def test_params_round_trip_and_card_only_manifests_unchanged() -> None:
    assert GeneratorParams.from_dict(WORLD.to_dict()) == WORLD
    assert WORLD.to_dict()["credit"] == {"history_days": 900, "applications_per_year": 0.9}
    assert "credit" not in replace(WORLD, credit=None).to_dict()


# --- determinism and the contract --------------------------------------------------


def test_same_params_same_bytes() -> None:
    a, b = generate(TINY), generate(TINY)
    assert list(a.tables) == list(b.tables)
    for dataset in CREDIT_DATASETS:
        keys = [k for k in a.tables if k[0] == dataset]
        assert all(a.tables[k].equals(b.tables[k]) for k in keys), dataset
        whole = [pa.concat_tables([t.tables[k] for k in keys]) for t in (a, b)]
        assert parquet_bytes(whole[0]) == parquet_bytes(whole[1]), dataset
    other = generate(replace(TINY, seed=10))
    assert frame(other, "ledger").equals(frame(a, "ledger")) is False


def test_credit_leaves_the_card_datasets_as_they_were() -> None:
    with_credit, without = generate(TINY), generate(replace(TINY, credit=None))
    card = {k: t for k, t in with_credit.tables.items() if k[0] in ("transactions", "labels")}
    assert list(card) == list(without.tables)
    assert all(parquet_bytes(card[k]) == parquet_bytes(without.tables[k]) for k in card)
    assert {k[0] for k in with_credit.tables} == {"transactions", "labels", *CREDIT_DATASETS}


def test_every_file_has_the_landing_schema(world: LandingBatch) -> None:
    for (dataset, _, _), table in world.tables.items():
        if dataset in CREDIT_DATASETS:
            assert table.schema.equals(SCHEMAS[dataset]), dataset


def test_nothing_lands_after_complete_through_and_outcomes_are_known_facts(
    world: LandingBatch,
) -> None:
    through = pd.Timestamp(WORLD.complete_through)
    for dataset in CREDIT_DATASETS:
        assert (frame(world, dataset).ingested_at <= through).all(), dataset
    out = frame(world, "credit_outcomes")
    assert (out.label_ts <= through).all()
    assert (out.ingested_at > out.label_ts).all()  # outcomes arrive late
    first = pd.Timestamp(WORLD.start - timedelta(days=900))
    assert frame(world, "ledger").ingested_at.min() >= first


# --- realism --------------------------------------------------------------------


def test_default_rate_and_overdraft_frequency_are_realistic(world: LandingBatch) -> None:
    known = known_outcomes(world)
    assert len(known) > 400
    assert 0.05 <= known.defaulted.mean() <= 0.11
    led = clean_ledger(world)
    snaps = led[led.event_type == "balance_snapshot"]
    assert 0.03 <= (snaps.balance < 0).mean() <= 0.25
    overdrawn_accounts = snaps[snaps.balance < 0].account_id.nunique()
    assert 0.15 <= overdrawn_accounts / snaps.account_id.nunique() <= 0.6
    fees = led[led.event_type == "overdraft_fee"]
    assert (fees.amount > 0).all() and (fees.amount <= 8_000).all()
    assert (led.amount.dropna() % 1 == 0).all()  # whole minor units
    assert (led[led.event_type == "balance_snapshot"].amount.isna()).all()
    assert led[led.event_type != "balance_snapshot"].balance.isna().all()


def test_default_rate_rises_with_missed_payments(world: LandingBatch) -> None:
    led = clean_ledger(world)
    missed = led[led.event_type.isin(["missed_payment", "returned_payment"])]
    by_account = {
        a: np.sort(g.ts.dt.tz_convert(None).to_numpy()) for a, g in missed.groupby("account_id")
    }
    known = known_outcomes(world)
    counts = []
    for account, ts in zip(known.account_id, known.ts.dt.tz_convert(None).to_numpy(), strict=True):
        times = by_account.get(account, np.array([], dtype=ts.dtype))
        lo = np.searchsorted(times, ts - np.timedelta64(180, "D"), side="right")
        counts.append(np.searchsorted(times, ts, side="right") - lo)
    known["missed"] = counts
    quintile = pd.qcut(known.missed.rank(method="first"), 5, labels=False)
    rate = known.groupby(quintile).defaulted.mean()
    assert rate[4] > 2 * rate[[0, 1]].mean()
    band = pd.cut(known.missed, [-1, 0, 2, 1000], labels=False)
    by_band = known.groupby(band).defaulted.mean()
    assert by_band.is_monotonic_increasing and by_band.iloc[-1] > by_band.iloc[0]


def test_balance_is_the_running_sum_of_the_flows() -> None:
    led = clean_ledger(generate(replace(TINY, bad_rate=0)))
    # Rows still in flight at complete_through would leave gaps: stop 10 days before.
    led = led[led.ts < pd.Timestamp(TINY.complete_through - timedelta(days=10))]
    sign = led.event_type.map({"salary": 1, "credit": 1, "direct_debit": -1, "overdraft_fee": -1})
    led = led.assign(flow=sign.fillna(0) * led.amount.fillna(0)).sort_values(
        ["account_id", "ts", "ledger_event_id"]
    )
    checked = 0
    for _, g in led.groupby("account_id"):
        snap = g.event_type.to_numpy() == "balance_snapshot"
        flows = np.cumsum(g.flow.to_numpy())[snap]
        balance = g.balance.to_numpy()[snap]
        assert np.array_equal(np.diff(balance), np.diff(flows))
        checked += snap.sum()
    assert checked > 1000


def test_applications_carry_what_the_prescreen_rules_need(world: LandingBatch) -> None:
    apps = frame(world, "applications").drop_duplicates("application_id")
    apps = apps[apps.application_ts.str.match(ISO)]
    assert set(apps.term_months) <= {12, 24, 36, 48, 60}
    assert (apps.applicant_age < 18).any()
    assert ((apps.months_since_last_default <= 12) & apps.months_since_last_default.notna()).any()
    assert apps.months_since_last_default.isna().mean() > 0.8
    ts = pd.to_datetime(apps.application_ts, format="ISO8601", utc=True)
    assert (ts >= pd.Timestamp(WORLD.start - timedelta(days=900 - 180))).all()
    known = known_outcomes(world)
    assert (known.applicant_age >= 18).all()  # under-18s are declined, never booked
    expected_label = known.ts.dt.floor("us") + pd.Timedelta(days=365)
    clean = ~known.defaulted
    assert (known.label_ts[clean] == expected_label[clean]).all()
    assert (known.label_ts[~clean] < expected_label[~clean]).all()


# --- messiness --------------------------------------------------------------------


def test_late_duplicate_and_bad_rows_at_their_rates(world: LandingBatch) -> None:
    led = frame(world, "ledger")
    n = world.stats["ledger_events"]
    repeated = led.ledger_event_id.duplicated(keep=False) & led.ledger_event_id.notna()
    assert 0.007 * n <= repeated.sum() / 2 <= 0.013 * n
    ts = pd.to_datetime(led.event_ts, format="ISO8601", utc=True, errors="coerce")
    late = (led.ingested_at - ts) > pd.Timedelta(days=1, hours=6)  # past the nightly batch
    assert 0.01 * n <= late.sum() <= 0.03 * n
    bad = {
        "null id": led.ledger_event_id.isna().sum(),
        "null account": led.account_id.isna().sum(),
        "null amount": (led.amount.isna() & (led.event_type != "balance_snapshot")).sum(),
        "negative amount": (led.amount < 0).sum(),
        "unknown type": (led.event_type == UNKNOWN_EVENT_TYPE).sum(),
        "naive": led.event_ts.str.match(r"^\d{4}-\d\d-\d\dT[\d:.]+$").sum(),
        "unparseable": (led.event_ts == "not-a-time").sum(),
        "after ingested_at": (ts > led.ingested_at).sum(),
    }
    assert all(v >= 1 for v in bad.values()), bad
    assert sum(bad.values()) == world.stats["ledger_bad"]
    assert abs(world.stats["ledger_bad"] - WORLD.bad_rate * n) <= 2
    offsets = led.event_ts.str.extract(r"(Z|[+-]\d\d:\d\d)$")[0].dropna().unique()
    assert {"Z", "+00:00", "+01:00"} <= set(offsets)
    apps = frame(world, "applications")
    assert apps.application_id.duplicated().sum() == world.stats["application_duplicates"] > 0
    assert apps.application_id.isna().sum() >= 1 and apps.amount.isna().sum() >= 1
    assert frame(world, "credit_outcomes").application_id.duplicated().sum() > 0


def test_without_bad_rate_every_row_is_well_formed() -> None:
    b = generate(replace(TINY, bad_rate=0))
    led = frame(b, "ledger")
    assert led.event_ts.str.match(ISO).all() and led.ledger_event_id.notna().all()
    assert led.event_type.isin(LEDGER_EVENT_TYPES).all()
    assert frame(b, "applications").application_ts.str.match(ISO).all()


# --- sizes and the zone -------------------------------------------------------------


def test_the_default_world_is_big_enough_for_a_credit_model() -> None:
    stats = generate(GeneratorParams(credit=CreditParams())).stats
    assert stats["applications"] >= 3000
    assert stats["credit_outcomes"] >= 1500
    assert stats["ledger_rows"] < 600_000


def test_the_written_zone_verifies(tmp_path: Path) -> None:
    batch = generate(TINY)
    manifest = write_landing(batch, tmp_path / "landing")
    assert validate_for_watermark(tmp_path / "landing", TINY.complete_through) == manifest
    again = read_manifest(tmp_path / "landing")
    assert GeneratorParams.from_dict(again.params) == TINY
    assert {e.dataset for e in again.partitions} >= set(CREDIT_DATASETS)
    first = datetime.combine(TINY.start.date() - timedelta(days=560), datetime.min.time(), UTC)
    assert min(e.ingest_date for e in again.partitions) > first.date()
    assert write_landing(generate(TINY), tmp_path / "landing") == manifest  # idempotent
