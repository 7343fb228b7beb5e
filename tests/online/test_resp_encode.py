"""The column-wise HSET encoder (pitstore.online.resp_encode) against the codec's
row-wise one, and the materializer's bulk write path against a real Redis."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import redis

import pitstore.online.materialize as mat
from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_DAILY, FEATURE_VIEWS, FRAUD_V1, FeatureView
from pitstore.core.timeutil import to_us
from pitstore.online import codec, resp_encode
from pitstore.online.reader import read_features, resp_bulk
from pitstore.online.resp_encode import hset_rows

INTS = [None, 0, 1, 127, 128, 16383, 16384, 2**21, 2**35, 2**63 - 1, -1, -(2**63)]
FLOATS = [None, 0.0, -0.0, 1.5, float("nan"), float("inf"), -float("inf"), 1e300]
STAMPS = [0, 1, 999_999, 1_000_000, -5_000_001, 1_767_225_600_000_000]


def random_table(rng: random.Random, view: FeatureView, n: int) -> pa.Table:
    keys = [
        f"K{rng.randrange(10 ** rng.randrange(1, 9))}" + "é" * rng.randrange(3) for _ in range(n)
    ]
    stamps = [
        rng.choice([*STAMPS, 1_767_225_600_000_000 + rng.randrange(10**12)]) for _ in range(n)
    ]
    data: dict[str, pa.Array] = {
        view.entity.join_key: pa.array(keys),
        "event_timestamp": pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }
    for f in view.features:
        if f.dtype == "int64":
            pool = [*INTS, rng.randrange(-(10**9), 10**12)]
            data[f.name] = pa.array([rng.choice(pool) for _ in range(n)], pa.int64())
        else:
            pool = [*FLOATS, rng.random() * 1e9]
            data[f.name] = pa.array([rng.choice(pool) for _ in range(n)], pa.float64())
    return pa.table(data)


def row_wise(view: FeatureView, table: pa.Table) -> list[bytes]:
    """Each row as RESP bulk strings: key, then field/value pairs (the codec's order)."""
    return [
        b"".join(resp_bulk(p) for p in (key, *[part for kv in mapping.items() for part in kv]))
        for key, mapping in codec.encode_rows(view, table)
    ]


@pytest.fixture(params=["kernel", "rows"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both encoders: the compiled one (forced for small tables) and the row-wise one."""
    monkeypatch.setattr(resp_encode, "KERNEL_MIN_ROWS", 1 if request.param == "kernel" else 10**9)
    return str(request.param)


@pytest.mark.parametrize("view", FEATURE_VIEWS, ids=lambda v: v.name)
def test_columns_encode_the_same_bytes_as_rows(view: FeatureView, encoder: str) -> None:
    rng = random.Random(view.name)
    table = random_table(rng, view, 2_000)
    # Several chunks per column, as a multi-file DuckDB result has.
    table = pa.concat_tables([table.slice(0, 700), table.slice(700)])
    got = hset_rows(view, table)
    want = row_wise(view, table)
    assert got.n == len(want)
    assert got.args_per_row == 3 + 2 * len(view.features)
    assert bytes(got.payload) == b"".join(want)
    assert bytes(got.batch(0, 1)) == want[0]
    assert bytes(got.batch(5, 17)) == b"".join(want[5:17])
    assert bytes(got.batch(1_990, 2_000)) == b"".join(want[1_990:])


def test_empty_table_and_null_key(encoder: str) -> None:
    view = ACCOUNT_DAILY
    empty = random_table(random.Random(1), view, 3).slice(0, 0)
    assert hset_rows(view, empty).n == 0
    bad = random_table(random.Random(2), view, 3)
    bad = bad.set_column(0, view.entity.join_key, pa.array(["A1", None, "A3"]))
    with pytest.raises(ValueError, match="null entity key"):
        hset_rows(view, bad)


def test_bulk_write_reads_back_and_refuses_wrongtype(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, encoder: str
) -> None:
    """Batches of 7 (one in flight), read back through the serving read path; a
    key held by another type makes Redis refuse that HSET, and the write raises
    instead of reporting success."""
    monkeypatch.setattr(mat, "BATCH", 7)
    client = redis.Redis.from_url(settings.redis_url)
    at = datetime(2026, 1, 10, tzinfo=UTC)
    w_us = to_us(at)
    for view in FEATURE_VIEWS:  # the writer's claim, as materialize_view takes it
        client.set(mat.CLAIM.format(view=view.name), w_us)
    n = 50
    written = 0
    for view in FRAUD_V1.views:
        key = view.entity.join_key
        prefix = "A" if key == "account_id" else "M"
        data: dict[str, object] = {
            key: [f"{prefix}{i}" for i in range(n)],
            "event_timestamp": [at - timedelta(hours=i % 5) for i in range(n)],
        }
        for j, f in enumerate(view.features):
            data[f.name] = [i * 1000 + j if f.dtype == "int64" else i / 7 + j for i in range(n)]
        written += mat.write_table(client, view, pa.table(data), w_us)
    assert written == n * len(FRAUD_V1.views)
    rows = [{"account_id": f"A{i}", "merchant_id": f"M{i}"} for i in range(n)]
    got = read_features(client, FRAUD_V1, rows, at, apply_ttl=False)
    for i, row in enumerate(got):
        for view in FRAUD_V1.views:
            for j, f in enumerate(view.features):
                want = i * 1000 + j if f.dtype == "int64" else i / 7 + j
                assert row.values[f"{view.name}__{f.name}"] == want, (i, f.name)

    view = ACCOUNT_DAILY
    table = pa.table(
        {
            "account_id": ["A1", "A2"],
            "event_timestamp": [at, at],
            **{f.name: [1, 2] if f.dtype == "int64" else [1.0, 2.0] for f in view.features},
        }
    )
    client.set(codec.entity_key("account_id", "A2"), b"not a hash")
    with pytest.raises(mat.MaterializeError, match="WRONGTYPE"):
        mat.write_table(client, view, table, w_us)
    # A writer whose claim was taken over writes nothing more.
    client.set(mat.CLAIM.format(view=view.name), w_us + 1)
    client.delete(codec.entity_key("account_id", "A2"))
    with pytest.raises(mat.Superseded):
        mat.write_table(client, view, table, w_us)
    assert not client.exists(codec.entity_key("account_id", "A2"))
