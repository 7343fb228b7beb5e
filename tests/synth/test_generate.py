"""The synthetic landing-zone generator: params, determinism, realistic shapes."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pitstore.synth.generate import (
    BAD_KINDS,
    DRIFT_COLUMN,
    LABELS_SCHEMA,
    TRANSACTIONS_SCHEMA,
    GeneratorParams,
    LandingBatch,
    generate,
)

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
SMALL = GeneratorParams(accounts=300, merchants=60, days=30, seed=11)


@pytest.fixture(scope="module")
def batch() -> LandingBatch:
    return generate(SMALL)


@pytest.fixture(scope="module")
def clean_batch() -> LandingBatch:
    return generate(GeneratorParams(accounts=300, merchants=60, days=30, seed=11, bad_rate=0))


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def frame(b: LandingBatch, dataset: str, part: int = 0) -> pd.DataFrame:
    tables = [t for k, t in b.tables.items() if k[0] == dataset and k[2] == part]
    return pa.concat_tables(tables).to_pandas()


def good_rows(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Rows a transform would accept, with their parsed event_ts."""
    ok = (
        tx.transaction_id.notna()
        & tx.account_id.notna()
        & tx.merchant_id.notna()
        & np.isfinite(tx.amount)
        & (tx.amount > 0)
        & tx.event_ts.str.match(ISO_WITH_OFFSET)
    )
    good = tx[ok]
    return good, pd.to_datetime(good.event_ts, format="ISO8601", utc=True)


# --- params -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": -3}, "days must be >= 1, got -3"),
        ({"accounts": 0}, "accounts must be >= 1"),
        ({"merchants": 0}, "merchants must be >= 1"),
        ({"bad_rate": 0.5}, "bad_rate"),
        ({"bad_rate": -0.1}, "bad_rate"),
        ({"bad_rate": float("nan")}, "bad_rate"),
        ({"start": datetime(2026, 1, 5)}, "timezone-aware"),
        ({"start": datetime(2026, 1, 5, 6, tzinfo=UTC)}, "midnight"),
        ({"start": datetime(2026, 1, 5, tzinfo=timezone(timedelta(hours=1)))}, "UTC"),
    ],
)
def test_params_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GeneratorParams(**kwargs)


def test_params_reject_non_int_counts() -> None:
    with pytest.raises(TypeError, match="accounts must be an int"):
        GeneratorParams(accounts=2.5)  # type: ignore[arg-type]


def test_params_round_trip_through_dict() -> None:
    assert GeneratorParams.from_dict(SMALL.to_dict()) == SMALL
    assert SMALL.complete_through == datetime(2026, 2, 4, tzinfo=UTC)


# --- determinism --------------------------------------------------------------


def test_same_params_same_tables(batch: LandingBatch) -> None:
    again = generate(SMALL)
    assert list(again.tables) == list(batch.tables)
    # bytes, not Table.equals: NaN amounts never compare equal
    assert all(parquet_bytes(again.tables[k]) == parquet_bytes(t) for k, t in batch.tables.items())
    other = generate(GeneratorParams(accounts=300, merchants=60, days=30, seed=12))
    key = ("transactions", "2026-01-10", 0)
    assert parquet_bytes(other.tables[key]) != parquet_bytes(batch.tables[key])


# --- schema and layout --------------------------------------------------------


def test_schemas_are_exact(batch: LandingBatch) -> None:
    for (dataset, ingest_date, part), table in batch.tables.items():
        if dataset == "labels":
            assert table.schema == LABELS_SCHEMA
        elif part == 0:
            assert table.schema == TRANSACTIONS_SCHEMA
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ingest_date)


def test_exactly_one_drift_file_only_with_bad_rate(
    batch: LandingBatch, clean_batch: LandingBatch
) -> None:
    drift = [k for k in batch.tables if k[2] != 0]
    assert len(drift) == 1 and drift[0][0] == "transactions"
    names = batch.tables[drift[0]].schema.names
    assert DRIFT_COLUMN in names and "amount" not in names
    assert batch.tables[drift[0]].num_rows > 0
    assert batch.relative_path(drift[0]).endswith("/part-00001.parquet")
    assert all(k[2] == 0 for k in clean_batch.tables)


def test_rows_sit_in_their_ingest_date_and_before_complete_through(batch: LandingBatch) -> None:
    through = SMALL.complete_through
    for (_, ingest_date, _), table in batch.tables.items():
        ingested = table.column("ingested_at").to_pandas()
        assert ingested.notna().all()
        assert (ingested <= through).all()
        assert (ingested.dt.date.astype(str) == ingest_date).all()


def test_rows_within_a_partition_are_out_of_order(batch: LandingBatch) -> None:
    table = batch.tables[("transactions", "2026-01-10", 0)]
    assert not table.column("ingested_at").to_pandas().is_monotonic_increasing


# --- realistic shapes ---------------------------------------------------------


def test_fraud_rate_and_patterns(batch: LandingBatch) -> None:
    s = batch.stats
    assert 0.005 <= s["fraud"] / s["transactions"] <= 0.015
    assert all(
        s[f"fraud_{kind}"] > 0
        for kind in ("card_testing", "account_takeover", "compromised_merchant")
    )
    tx = frame(batch, "transactions").drop_duplicates("transaction_id")
    labels = frame(batch, "labels")
    fraud = tx.merge(labels[labels.is_fraud], on="transaction_id")
    # Card testing: small ecom probes; takeover: large foreign ecom.
    assert ((fraud.channel == "ecom") & (fraud.amount <= 300)).sum() >= 5
    assert ((fraud.channel == "ecom") & (fraud.country != "GB") & (fraud.amount >= 10_000)).any()


def test_card_testing_is_a_burst_on_one_card(batch: LandingBatch) -> None:
    tx, ts = good_rows(frame(batch, "transactions").drop_duplicates("transaction_id"))
    small = tx.assign(ts=ts)[(tx.channel == "ecom") & (tx.amount <= 300)]
    per_window = small.groupby(["card_id", small.ts.dt.floor("10min")]).size()
    assert per_window.max() >= 6


def test_amounts_are_integer_cents_and_heavy_tailed(batch: LandingBatch) -> None:
    good, _ = good_rows(frame(batch, "transactions"))
    assert (good.amount == good.amount.round()).all()
    assert good.amount.quantile(0.99) > 8 * good.amount.median()
    assert set(good.channel) == {"pos", "contactless", "ecom", "atm"}
    assert (good.country == "GB").mean() > 0.8
    assert {"EUR", "USD"} <= set(good.currency) and (good.currency == "GBP").mean() > 0.8
    # ecom carries a device, card-present never does
    assert good[good.channel == "ecom"].device_id.notna().all()
    assert good[good.channel != "ecom"].device_id.isna().all()


def test_event_ts_has_offsets_and_ingestion_follows_it(clean_batch: LandingBatch) -> None:
    # The clean batch: with bad_rate > 0 some well-formed rows are "future" events.
    tx = frame(clean_batch, "transactions").sort_values("ingested_at")
    good, ts = good_rows(tx.drop_duplicates("transaction_id"))  # first copy's lag
    suffixes = good.event_ts.str[26:]
    assert suffixes.eq("Z").mean() > 0.5
    assert {"+01:00", "-05:00"} <= set(suffixes)
    lag = good.ingested_at - ts
    assert (lag >= pd.Timedelta(0)).all()
    late = lag > pd.Timedelta(hours=1)
    assert 0.015 < late.mean() < 0.05
    assert lag.max() <= pd.Timedelta(days=3)
    # An offset applied with the wrong sign would show as ~1h lags here.
    assert (lag[~late] <= pd.Timedelta(minutes=30)).all()


def test_offsets_follow_dst() -> None:
    b = generate(
        GeneratorParams(
            accounts=80, merchants=30, days=12, seed=5, start=datetime(2026, 3, 22, tzinfo=UTC)
        )
    )
    good, ts = good_rows(frame(b, "transactions"))
    suffix = good.event_ts.str[26:]
    before = ts < pd.Timestamp("2026-03-29T01:00", tz="UTC")
    # UK switches to BST (+01:00) and Paris to CEST (+02:00) on 2026-03-29.
    assert "+00:00" in set(suffix[before]) and "+00:00" not in set(suffix[~before])
    assert "+02:00" in set(suffix[~before]) and "+02:00" not in set(suffix[before])
    assert "-04:00" in set(suffix)  # New York is already on EDT


def test_duplicates_are_identical_and_later(batch: LandingBatch) -> None:
    tx = frame(batch, "transactions")
    tx = tx[tx.transaction_id.notna()]
    dup = tx[tx.duplicated("transaction_id", keep=False)].sort_values(
        ["transaction_id", "ingested_at"]
    )
    assert 0.005 < dup.transaction_id.nunique() / tx.transaction_id.nunique() < 0.02
    assert dup.groupby("transaction_id").size().eq(2).all()
    content = [c for c in dup.columns if c != "ingested_at"]
    first, second = dup.iloc[::2], dup.iloc[1::2]
    assert first[content].reset_index(drop=True).equals(second[content].reset_index(drop=True))
    assert (second.ingested_at.to_numpy() > first.ingested_at.to_numpy()).all()


def test_labels_arrive_weeks_later(batch: LandingBatch) -> None:
    tx, ts = good_rows(frame(batch, "transactions").drop_duplicates("transaction_id"))
    labels = frame(batch, "labels").merge(tx.assign(ts=ts), on="transaction_id")
    delay = labels.label_ts - labels.ts
    assert (delay >= pd.Timedelta(days=3)).all() and (delay <= pd.Timedelta(days=45)).all()
    lag = labels.ingested_at_x - labels.label_ts
    assert (lag >= pd.Timedelta(0)).all() and (lag <= pd.Timedelta(days=1)).all()
    assert labels.is_fraud.any() and (~labels.is_fraud).any()


def test_bad_events_present_only_with_bad_rate(
    batch: LandingBatch, clean_batch: LandingBatch
) -> None:
    tx = frame(batch, "transactions")
    assert batch.stats["bad"] >= len(BAD_KINDS)
    assert tx.transaction_id.isna().any() and tx.account_id.isna().any()
    assert tx.merchant_id.isna().any()
    assert tx.amount.isna().any() and np.isinf(tx.amount).any() and (tx.amount < 0).any()
    assert (tx.event_ts == "not-a-time").any()
    assert tx.event_ts.str.fullmatch(r"[\d\-]{10}T[\d:]{8}\.\d{6}").any()  # naive
    parsed = pd.to_datetime(
        tx.event_ts.where(tx.event_ts.str.match(ISO_WITH_OFFSET)), format="ISO8601", utc=True
    )
    assert (parsed > tx.ingested_at).any()

    clean = frame(clean_batch, "transactions")
    assert clean_batch.stats["bad"] == 0
    assert clean[["transaction_id", "account_id", "card_id", "merchant_id"]].notna().all().all()
    assert (np.isfinite(clean.amount) & (clean.amount > 0)).all()
    assert clean.event_ts.str.match(ISO_WITH_OFFSET).all()
    parsed = pd.to_datetime(clean.event_ts, format="ISO8601", utc=True)
    assert (parsed <= clean.ingested_at).all()


def test_nothing_ingested_after_complete_through_is_written(batch: LandingBatch) -> None:
    # Late events near the end "have not arrived yet": they exist but are not landed.
    assert batch.stats["not_arrived"] > 0


def test_tiny_world_still_generates() -> None:
    b = generate(GeneratorParams(accounts=1, merchants=1, days=1, seed=0))
    assert any(k[2] == 1 for k in b.tables)
    assert sum(t.num_rows for k, t in b.tables.items() if k[0] == "transactions") > 0


def test_every_label_follows_its_landed_transaction(batch: LandingBatch) -> None:
    # A chargeback cannot reach the bank before the transaction it disputes.
    tx = frame(batch, "transactions").groupby("transaction_id").ingested_at.min()
    labels = frame(batch, "labels")
    assert labels.transaction_id.is_unique
    first_seen = labels.transaction_id.map(tx)
    assert first_seen.notna().all()
    assert (labels.ingested_at > first_seen).all()
