"""Load a run's offline rows into Redis, in Feast's own layout.

Why not ``feast materialize``: Feast 0.67's Redis writer skips a row whose event
timestamp is not newer than the stored one ("Skip only if older OR exact same
instant"), so a restatement of the newest boundary (same ``event_timestamp``,
later ``created_timestamp``) never reaches Redis. DESIGN requires it to.

What we write: for every entity touched by any row created in
``(last materialized W, W]``, its ``as_known`` value at ``W`` (newest
``event_timestamp <= W`` among versions with ``created_timestamp <= W``, newest
``created_timestamp`` first), encoded by ``pitstore.online.codec``.

Never wrong with exit 0. Two keys per view:

* ``pitstore:materialized:<view>`` (the marker): Redis holds the as-known state
  at this W. Readers (parity, serving) trust it.
* ``pitstore:materializing:<view>`` (the claim): the W of the newest writer.

A run refuses a W that has no completed transform run or lies in the future.
It then claims the view by compare-and-set (a Lua script): only a W at least
the claim and the marker can take it, so a newer run supersedes an older one
that is still writing. Every batch of HSETs runs inside a script that first
checks the claim is still ours, so a superseded writer cannot overwrite newer
values, not even one batch later. The marker moves last, again by script, only
if the claim is still ours and the marker would not move back. A crash leaves
the marker where it was (rerunning heals: values are recomputed from the
offline store). ``reset_view`` is the one way back in time (an operator's
repair): it takes the claim by force, rewrites every entity at W and sets the
marker to W.

Each entity is one HSET of all its fields, applied atomically, so an entity's
hash is never half old, half new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import redis
from redis.connection import ConnectionInterface

from pitstore.core.config import Settings
from pitstore.core.runs import completed_watermarks
from pitstore.core.spec import FeatureView
from pitstore.core.timeutil import from_us, to_us
from pitstore.online import codec
from pitstore.online.reader import resp_bulk
from pitstore.online.resp_encode import HsetRows, hset_rows

MARKER = "pitstore:materialized:{view}"
CLAIM = "pitstore:materializing:{view}"
# Rows per script call. A script holds Redis for its whole run, so online reads
# wait behind it: 500 rows measured 9-15 ms a call on the shared 2-core machine,
# 100 rows 1.1-1.7 ms, for the same total write time (docs/decisions/0003).
BATCH = 100
ENCODE_ROWS = 100_000  # rows encoded at a time: bounds the payload's memory
CLOCK_SKEW = timedelta(minutes=5)

# KEYS: claim, marker. ARGV: W, force ("1": reset). Takes the claim unless a
# newer run holds it or the marker is newer (both only when not forced).
_CLAIM_LUA = """
local claim = redis.call('GET', KEYS[1]) or '-1'
local marker = redis.call('GET', KEYS[2]) or '-1'
local w = tonumber(ARGV[1])
if ARGV[2] ~= '1' and (tonumber(claim) > w or tonumber(marker) > w) then
  return {0, claim, marker}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, claim, marker}
"""
# KEYS: claim. ARGV: W, HSET|HDEL, args per row, then the rows (key, args...).
_WRITE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('SUPERSEDED ' .. (redis.call('GET', KEYS[1]) or 'none'))
end
local cmd = ARGV[2]
if cmd ~= 'HSET' and cmd ~= 'HDEL' then return redis.error_reply('bad command') end
local m = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV, m do
  redis.call(cmd, unpack(ARGV, i, i + m - 1))
  n = n + 1
end
return n
"""
# KEYS: claim, marker. ARGV: W, force. Moves the marker to W if the claim is
# still ours and (unless forced) the marker would not move back.
_COMMIT_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local marker = tonumber(redis.call('GET', KEYS[2]) or '-1')
if ARGV[2] ~= '1' and marker > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


class MaterializeError(RuntimeError):
    """A materialization that did not happen (or not completely); the marker did not move."""


class WatermarkRefused(MaterializeError):
    """An operator's mistake in the watermark (a usage error)."""


class Superseded(MaterializeError):
    """A newer materialization of the view took over while this one was writing."""


@dataclass
class MaterializeResult:
    view: str
    watermark: str
    entities_written: int
    previous_watermark: str | None
    skipped: bool = False
    note: str = ""


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)


def check_watermark(settings: Settings, w_us: int, now: datetime | None = None) -> None:
    """Refuse a W in the future or without a completed transform run."""
    latest = (now or datetime.now(UTC)) + CLOCK_SKEW
    if w_us > to_us(latest):
        raise WatermarkRefused(
            f"watermark {_iso(w_us)} is in the future (now is {datetime.now(UTC).isoformat()}, "
            f"{CLOCK_SKEW} of clock skew allowed): a run at W sees only events ingested by W"
        )
    runs = completed_watermarks(settings)
    if w_us not in runs:
        newest = f"the newest completed run is {_iso(runs[-1])}" if runs else "no run completed yet"
        raise WatermarkRefused(
            f"no completed transform run at {_iso(w_us)} ({newest}): "
            f"run `pitstore transform -w {_iso(w_us)}` first"
        )


def as_known_rows(
    offline_dir: Path, view: FeatureView, watermark_us: int, since_us: int | None
) -> pa.Table:
    """Per entity, the as_known value at W, for entities touched since ``since_us``."""
    key = view.entity.join_key
    glob = _offline_glob(offline_dir, view)
    touched = (
        ""
        if since_us is None
        else f"and {key} in (select {key} from read_parquet('{glob}') "
        f"where epoch_us(created_timestamp) > {since_us} "
        f"and epoch_us(created_timestamp) <= {watermark_us})"
    )
    return _query(f"""
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
    """)


def unknown_at(offline_dir: Path, view: FeatureView, watermark_us: int) -> list[str]:
    """Entities of the offline store with no version known at W (all came later)."""
    key = view.entity.join_key
    glob = _offline_glob(offline_dir, view)
    table = _query(f"""
        select {key} from read_parquet('{glob}') group by {key}
        having count(*) filter (where epoch_us(event_timestamp) <= {watermark_us}
                                  and epoch_us(created_timestamp) <= {watermark_us}) = 0
        order by {key}
    """)
    return [str(v) for v in table.column(key).to_pylist()]


def materialize_view(
    settings: Settings, view: FeatureView, watermark: datetime, full: bool = False
) -> MaterializeResult:
    """Bring the view's Redis hashes to the as-known state at ``watermark``.

    An older W than Redis already holds is skipped (Redis never moves back in
    time under live scorers); so is a run a newer one superseded.
    """
    w_us = to_us(watermark)
    check_watermark(settings, w_us)
    client = redis_client(settings)
    keys = [CLAIM.format(view=view.name), MARKER.format(view=view.name)]
    try:
        taken, claim, marker = _claim(client, keys, w_us, force=False)
        previous = marker if marker >= 0 else None
        if not taken:
            return _refused_claim(view, watermark, claim, previous)
        since = None if (full or previous is None) else previous
        table = as_known_rows(settings.offline_view_dir(view.name), view, w_us, since)
        written = write_table(client, view, table, w_us)
        if not _commit(client, keys, w_us, force=False):
            raise Superseded("a newer materialization took the view before this one finished")
    except Superseded as exc:
        note = f"skipped: superseded by a newer materialization ({exc})"
        return MaterializeResult(view.name, watermark.isoformat(), 0, None, True, note)
    except redis.exceptions.ConnectionError as exc:
        raise MaterializeError(f"Redis at {settings.redis_url} is unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise MaterializeError(f"materializing {view.name} failed in Redis: {exc}") from exc
    finally:
        client.close()
    return MaterializeResult(view.name, watermark.isoformat(), written, _iso(previous))


def reset_view(settings: Settings, view: FeatureView, watermark: datetime) -> MaterializeResult:
    """The repair for a marker set by mistake: every entity of the view back to
    its as-known state at W (entities unknown at W lose the view's fields) and
    the marker set to W, even backwards. W must have a completed run."""
    w_us = to_us(watermark)
    check_watermark(settings, w_us)
    client = redis_client(settings)
    keys = [CLAIM.format(view=view.name), MARKER.format(view=view.name)]
    offline_dir = settings.offline_view_dir(view.name)
    try:
        _, _, marker = _claim(client, keys, w_us, force=True)
        table = as_known_rows(offline_dir, view, w_us, None)
        written = write_table(client, view, table, w_us)
        gone = unknown_at(offline_dir, view, w_us)
        _run_scripts(client, view, w_us, b"HDEL", _hdel_rows(view, gone))
        if not _commit(client, keys, w_us, force=True):
            raise Superseded("another materialization took the view during the reset")
    except redis.exceptions.ConnectionError as exc:
        raise MaterializeError(f"Redis at {settings.redis_url} is unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise MaterializeError(f"resetting {view.name} failed in Redis: {exc}") from exc
    finally:
        client.close()
    note = f"reset: {len(gone)} entities unknown at W cleared"
    return MaterializeResult(
        view.name, watermark.isoformat(), written, _iso(marker if marker >= 0 else None), note=note
    )


def write_table(client: redis.Redis, view: FeatureView, table: pa.Table, w_us: int) -> int:
    """HSET every row of ``table`` (join key, ``event_timestamp``, every feature of
    ``view``) under the claim ``w_us``; the number of entities written.

    Rows are encoded column-wise (``resp_encode``) and sent as script calls of
    ``BATCH`` rows, one call in flight while the previous one's reply is read.
    An error reply (WRONGTYPE, OOM, a lost claim) raises before any marker moves.
    """
    written = 0
    for lo in range(0, table.num_rows, ENCODE_ROWS):
        rows = hset_rows(view, table.slice(lo, ENCODE_ROWS))
        written += _run_scripts(client, view, w_us, b"HSET", rows)
    return written


def _hdel_rows(view: FeatureView, entities: list[str]) -> HsetRows:
    """Per entity: its key and the view's fields (``_ts`` first), for HDEL."""
    fields = b"".join(resp_bulk(f) for f in [codec.ts_field(view.name), *codec.view_fields(view)])
    rows = [resp_bulk(codec.entity_key(view.entity.join_key, e)) + fields for e in entities]
    ends = np.cumsum([len(r) for r in rows], dtype=np.int64)
    return HsetRows(memoryview(b"".join(rows)), ends, len(rows), 2 + len(view.features))


def _run_scripts(
    client: redis.Redis, view: FeatureView, w_us: int, command: bytes, rows: HsetRows
) -> int:
    """Send ``rows`` as pipelined ``EVALSHA`` calls of the write script, ``BATCH``
    rows a call, on a connection of their own; the rows written."""
    if rows.n == 0:
        return 0
    sha = str(client.script_load(_WRITE_LUA)).encode()
    fixed = (sha, b"1", CLAIM.format(view=view.name).encode(), b"%d" % w_us, command)
    head = b"".join(resp_bulk(p) for p in (b"EVALSHA", *fixed, b"%d" % rows.args_per_row))
    conn = client.connection_pool.make_connection()
    try:
        conn.connect()
        pending = False
        for start in range(0, rows.n, BATCH):
            stop = min(start + BATCH, rows.n)
            count = b"*%d\r\n" % (7 + (stop - start) * rows.args_per_row)
            _write_batch(conn, [count + head, rows.batch(start, stop)])
            if pending:
                _read_reply(conn, view)
            pending = True
        _read_reply(conn, view)
    finally:
        conn.disconnect()
    return rows.n


def _write_batch(conn: ConnectionInterface, parts: list[bytes | memoryview]) -> None:
    conn.send_packed_command(parts, check_health=False)  # type: ignore[arg-type]


def _read_reply(conn: ConnectionInterface, view: FeatureView) -> None:
    try:
        conn.read_response()
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith("SUPERSEDED"):
            raise Superseded(f"the claim on {view.name} is now W={_claim_iso(str(exc))}") from exc
        raise MaterializeError(f"Redis refused a write to {view.name}: {exc}") from exc


def _claim(client: redis.Redis, keys: list[str], w_us: int, force: bool) -> tuple[bool, int, int]:
    taken, claim, marker = client.register_script(_CLAIM_LUA)(keys, [w_us, "1" if force else "0"])
    return bool(taken), int(claim), int(marker)


def _commit(client: redis.Redis, keys: list[str], w_us: int, force: bool) -> bool:
    return bool(client.register_script(_COMMIT_LUA)(keys, [w_us, "1" if force else "0"]))


def _refused_claim(
    view: FeatureView, watermark: datetime, claim: int, marker: int | None
) -> MaterializeResult:
    if marker is not None and marker > to_us(watermark):
        note = f"skipped: Redis already holds a newer W ({_iso(marker)})"
        return MaterializeResult(view.name, watermark.isoformat(), 0, _iso(marker), True, note)
    raise MaterializeError(
        f"{view.name}: a materialization of {_iso(claim)} started and has not finished "
        f"(Redis holds {_iso(marker) or 'nothing'}): wait for it, or rerun it if it failed "
        f"(`pitstore materialize --reset-to W` repairs a wrong marker)"
    )


def _claim_iso(message: str) -> str:
    raw = message.split()[-1]
    return _iso(int(raw)) or raw if raw.lstrip("-").isdigit() else raw


def _offline_glob(offline_dir: Path, view: FeatureView) -> str:
    if not any(offline_dir.glob("run-*.parquet")):
        raise MaterializeError(
            f"no offline data for view {view.name} in {offline_dir}: run `pitstore transform` first"
        )
    return str(offline_dir / "run-*.parquet")


def _query(sql: str) -> pa.Table:
    con = duckdb.connect()
    try:
        con.sql("set timezone = 'UTC'")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_us(micros).isoformat()


def materialized_watermark(settings: Settings, view: FeatureView) -> datetime | None:
    raw = redis_client(settings).get(MARKER.format(view=view.name))
    return None if raw is None else from_us(int(raw))  # type: ignore[arg-type]
