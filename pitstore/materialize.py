"""Load a run's offline rows into Redis, in Feast's own layout.

Why not ``feast materialize``: Feast 0.67's Redis writer skips a row whose event
timestamp is not newer than the stored one ("Skip only if older OR exact same
instant"), so a restatement of the newest boundary (same ``event_timestamp``,
later ``created_timestamp``) never reaches Redis. DESIGN requires it to.

What we write: for every entity touched by any row created in
``(last materialized W, W]``, its ``as_known`` value at ``W`` (newest
``event_timestamp <= W`` among versions with ``created_timestamp <= W``, newest
``created_timestamp`` first). Keys, field names and values use Feast's own
encoding, so ``FeatureStore.get_online_features`` reads them unchanged.

Atomicity: each batch of entities is written in one MULTI/EXEC transaction (an
entity's hash is never half old, half new), and the view's
``pitstore:materialized:<view>`` marker moves to ``W`` only after every batch
landed. A crash leaves the marker at the old ``W``; rerunning heals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import redis
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from pitstore.config import Settings
from pitstore.feast_store import FEAST_PROJECT
from pitstore.spec import FeatureView
from pitstore.timeutil import from_us, to_us

MARKER = "pitstore:materialized:{view}"
BATCH = 2_000


class MaterializeError(RuntimeError):
    pass


@dataclass
class MaterializeResult:
    view: str
    watermark: str
    entities_written: int
    previous_watermark: str | None
    skipped: bool = False


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


def entity_redis_key(join_key: str, value: str) -> bytes:
    key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])
    return _redis_key(FEAST_PROJECT, key, entity_key_serialization_version=3)


def feature_field(view_name: str, feature_name: str) -> bytes:
    return _mmh3(f"{view_name}:{feature_name}")


def as_known_rows(
    offline_dir: Path, view: FeatureView, watermark_us: int, since_us: int | None
) -> pa.Table:
    """Per entity, the as_known value at W, for entities touched since ``since_us``."""
    key = view.entity.join_key
    files = sorted(offline_dir.glob("run-*.parquet"))
    if not files:
        raise MaterializeError(
            f"no offline data for view {view.name} in {offline_dir}: run `pitstore transform` first"
        )
    glob = str(offline_dir / "run-*.parquet")
    touched = (
        ""
        if since_us is None
        else f"and {key} in (select {key} from read_parquet('{glob}') "
        f"where epoch_us(created_timestamp) > {since_us} "
        f"and epoch_us(created_timestamp) <= {watermark_us})"
    )
    sql = f"""
        select * exclude (rank) from (
            select *, row_number() over (
                partition by {key} order by event_timestamp desc, created_timestamp desc
            ) as rank
            from read_parquet('{glob}')
            where epoch_us(event_timestamp) <= {watermark_us}
              and epoch_us(created_timestamp) <= {watermark_us}
              {touched}
        ) where rank = 1
        order by {key}
    """
    con = duckdb.connect()
    try:
        con.sql("set timezone = 'UTC'")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def encode_rows(view: FeatureView, table: pa.Table) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Feast's Redis hash for each row: ``_ts:<view>`` plus one field per feature."""
    key = view.entity.join_key
    ts_field = f"_ts:{view.name}".encode()
    fields = [(f.name, feature_field(view.name, f.name), f.dtype) for f in view.features]
    columns = {name: table.column(name).to_pylist() for name, _, _ in fields}
    keys = table.column(key).to_pylist()
    stamps = table.column("event_timestamp").to_pylist()
    for i, entity in enumerate(keys):
        ts = Timestamp()
        ts.FromMicroseconds(to_us(stamps[i]))
        mapping = {ts_field: ts.SerializeToString()}
        for name, field, dtype in fields:
            value = columns[name][i]
            proto = Value(int64_val=value) if dtype == "int64" else Value(double_val=value)
            mapping[field] = proto.SerializeToString()
        yield entity_redis_key(key, entity), mapping


def materialize_view(
    settings: Settings, view: FeatureView, watermark: datetime, full: bool = False
) -> MaterializeResult:
    client = redis_client(settings)
    marker = MARKER.format(view=view.name)
    try:
        previous_raw = client.get(marker)
    except redis.exceptions.ConnectionError as exc:
        raise MaterializeError(f"Redis at {settings.redis_url} is unreachable: {exc}") from exc
    w_us = to_us(watermark)
    previous = int(previous_raw) if previous_raw is not None else None
    if previous is not None and previous > w_us and not full:
        # Writing an older W would move Redis back in time under live scorers.
        return MaterializeResult(view.name, watermark.isoformat(), 0, _iso(previous), True)
    since = None if (full or previous is None) else previous
    table = as_known_rows(settings.offline_view_dir(view.name), view, w_us, since)
    written = 0
    batch: list[tuple[bytes, dict[bytes, bytes]]] = []
    for item in encode_rows(view, table):
        batch.append(item)
        if len(batch) >= BATCH:
            written += _write_batch(client, batch)
            batch = []
    if batch:
        written += _write_batch(client, batch)
    client.set(marker, w_us)
    return MaterializeResult(view.name, watermark.isoformat(), written, _iso(previous))


def _write_batch(client: redis.Redis, batch: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    with client.pipeline(transaction=True) as pipe:
        for redis_key, mapping in batch:
            pipe.hset(redis_key, mapping=mapping)  # type: ignore[arg-type]
        pipe.execute()
    return len(batch)


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_us(micros).isoformat()


def materialized_watermark(settings: Settings, view: FeatureView) -> datetime | None:
    raw = redis_client(settings).get(MARKER.format(view=view.name))
    return None if raw is None else from_us(int(raw))
