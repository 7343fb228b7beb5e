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

Atomicity: each entity is written by one HSET of all its fields, which Redis
applies atomically (an entity's hash is never half old, half new), so batches
are plain pipelines (encoded by ``pitstore.resp_encode``, sent on a connection
of their own, every reply checked) — a MULTI/EXEC around them would add nothing
but a QUEUED reply per command. The view's ``pitstore:materialized:<view>``
marker moves to ``W`` only after every batch landed. A crash leaves the marker
at the old ``W``; rerunning heals (values are recomputed from the offline store,
so a rerun writes the same bytes).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import hiredis
import pyarrow as pa
import redis
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from pitstore.core.config import Settings
from pitstore.core.feast_store import FEAST_PROJECT
from pitstore.core.spec import FeatureView
from pitstore.core.timeutil import from_us, to_us
from pitstore.online.reader import feast_key_parts
from pitstore.online.resp_encode import hset_commands

MARKER = "pitstore:materialized:{view}"
BATCH = 2_000  # commands per pipelined round trip
# Rows encoded at a time: bounds the payload's memory (~300-700 bytes a row).
ENCODE_ROWS = 100_000


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


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a 64-bit integer (negatives as two's complement)."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Hand-encoded protobufs, byte-identical to SerializeToString() (tests/
# test_bench_smoke.py checks them against the real messages):
# Value(int64_val=v) = field 4, varint; Value(double_val=x) = field 5, fixed64;
# Timestamp(seconds=s, nanos=n) = field 1 varint, then field 2 varint if n != 0.
_INT64_TAG = b"\x20"
_DOUBLE_TAG = b"\x29"
_SMALL_INT64 = tuple(_INT64_TAG + bytes([i]) for i in range(128))
_pack_double = struct.Struct("<d").pack


def encode_int64(value: int | None) -> bytes:
    if value is None:
        return b""  # an unset Value, as Value(int64_val=None) serializes
    if 0 <= value < 0x80:
        return _SMALL_INT64[value]
    if 0 < value < 0x4000:  # two-byte varint, the common case for counts and amounts
        return bytes((0x20, (value & 0x7F) | 0x80, value >> 7))
    if 0 < value < 0x200000:
        return bytes((0x20, (value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    return _INT64_TAG + _varint(value)


def encode_double(value: float | None) -> bytes:
    if value is None:
        return b""
    return _DOUBLE_TAG + _pack_double(value)


def encode_timestamp_us(micros: int) -> bytes:
    seconds, rest = divmod(micros, 1_000_000)
    out = b"\x08" + _varint(seconds) if seconds else b""
    return out + b"\x10" + _varint(rest * 1000) if rest else out


def _key_prefix(join_key: str) -> bytes:
    """Feast's serialized EntityKey (version 3) up to the value's length."""
    return feast_key_parts(join_key)[0]


def encode_rows(view: FeatureView, table: pa.Table) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Feast's Redis hash for each row: ``_ts:<view>`` plus one field per feature.

    Keys and values are encoded by hand (no per-row protobuf objects): the bytes
    are exactly those of ``_redis_key`` and ``Value/Timestamp.SerializeToString``.
    """
    key = view.entity.join_key
    ts_field = f"_ts:{view.name}".encode()
    names = [f.name for f in view.features]
    fields = [feature_field(view.name, n) for n in names]
    encoders = [encode_int64 if f.dtype == "int64" else encode_double for f in view.features]
    columns = [table.column(n).to_pylist() for n in names]
    stamps = (
        table.column("event_timestamp")
        .cast(pa.timestamp("us", tz="UTC"))
        .cast(pa.int64())
        .to_pylist()
    )
    prefix = _key_prefix(key)
    suffix = FEAST_PROJECT.encode()
    pack_len = struct.Struct("<I").pack
    plan = list(zip(fields, encoders, columns, strict=True))
    for i, entity in enumerate(table.column(key).to_pylist()):
        v = entity.encode()
        mapping = {ts_field: encode_timestamp_us(stamps[i])}
        for field, encode, column in plan:
            mapping[field] = encode(column[i])
        yield prefix + pack_len(len(v)) + v + suffix, mapping


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
    previous = int(previous_raw) if previous_raw is not None else None  # type: ignore[arg-type]
    if previous is not None and previous > w_us and not full:
        # Writing an older W would move Redis back in time under live scorers.
        return MaterializeResult(view.name, watermark.isoformat(), 0, _iso(previous), True)
    since = None if (full or previous is None) else previous
    table = as_known_rows(settings.offline_view_dir(view.name), view, w_us, since)
    written = write_table(client, view, table)
    client.set(marker, w_us)
    return MaterializeResult(view.name, watermark.isoformat(), written, _iso(previous))


def write_table(client: redis.Redis, view: FeatureView, table: pa.Table) -> int:
    """HSET every row of ``table`` (join key, ``event_timestamp``, every feature of
    ``view``) in Feast's layout; the number of entities written.

    The commands are encoded in columns (``pitstore.resp_encode``) and sent in
    pipelined batches of ``BATCH`` on a connection of their own, one batch in
    flight while the previous one's replies are read. Any error reply or
    connection failure raises before the caller moves its marker.
    """
    fields = [feature_field(view.name, f.name) for f in view.features]
    conn = client.connection_pool.make_connection()
    try:
        conn.connect()
        # redis-py did AUTH, SELECT and TLS on this connection; the bulk I/O is ours.
        sock = conn._sock  # type: ignore[attr-defined]
        assert sock is not None
        reader, buf = hiredis.Reader(), bytearray(1 << 16)
        pending = 0
        for lo in range(0, table.num_rows, ENCODE_ROWS):
            commands = hset_commands(view, table.slice(lo, ENCODE_ROWS), fields)
            for start in range(0, commands.n, BATCH):
                stop = min(start + BATCH, commands.n)
                _write_batch(sock, commands.batch(start, stop))
                if pending:
                    _read_replies(sock, reader, buf, pending)
                pending = stop - start
        if pending:
            _read_replies(sock, reader, buf, pending)
    except (OSError, redis.exceptions.RedisError) as exc:
        raise MaterializeError(f"writing {view.name} to Redis failed: {exc}") from exc
    finally:
        conn.disconnect()
    return table.num_rows


def _write_batch(sock: socket.socket, payload: memoryview) -> None:
    sock.sendall(payload)


def _read_replies(sock: socket.socket, reader: hiredis.Reader, buf: bytearray, n: int) -> None:
    """Read ``n`` replies into ``buf``, then ``reader``; an error reply (say
    WRONGTYPE, OOM) raises."""
    got = 0
    while got < n:
        reply = reader.gets()
        if reply is False:
            size = sock.recv_into(buf)
            if size == 0:
                raise MaterializeError("Redis closed the connection mid-batch")
            reader.feed(buf, 0, size)
            continue
        if isinstance(reply, hiredis.ReplyError):
            raise MaterializeError(f"Redis refused an HSET: {reply}")
        got += 1


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_us(micros).isoformat()


def materialized_watermark(settings: Settings, view: FeatureView) -> datetime | None:
    raw = redis_client(settings).get(MARKER.format(view=view.name))
    return None if raw is None else from_us(int(raw))  # type: ignore[arg-type]
