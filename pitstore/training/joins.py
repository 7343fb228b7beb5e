"""Point-in-time joins over the offline store (DESIGN.md, "Point-in-time joins").

Two modes, both Feast-compatible (the tests compare against Feast 0.67):

- ``as_known`` (default): the value the online store held at ``ts``: among the
  versions with ``created_timestamp <= ts``, the newest ``event_timestamp``,
  then the newest ``created_timestamp`` -- ``get_historical_features(...,
  filter_by_created_timestamp=True)``.
- ``as_of``: newest ``event_timestamp <= ts``, newest ``created_timestamp``
  regardless of when it was created -- Feast's default.

Both apply the view's TTL the way Feast does: a value with
``event_timestamp < ts - ttl`` is missing (null).

The DuckDB engine (SQL in ``training.join_sql``) streams the offline rows
through a hash join whose build side is the requests, keeping per request row
the greatest ``(event_timestamp, created_timestamp)`` among the versions that
qualify, then fetches that version's values. Memory scales with the requests,
not with the store (an ASOF JOIN sorts every offline row: measured at 1M
requests x 12M rows, about 3x the peak memory and no faster). Views with few
offline rows (``ASOF_MAX_ROWS``) find the winners with an ASOF JOIN instead,
which is cheaper there; both select the versions below:

- ``as_of``: versions with ``ts - ttl <= event_timestamp <= ts``.
- ``as_known``: versions with ``created_timestamp <= ts`` and
  ``event_timestamp >= ts - ttl``. Every row has ``event_timestamp <=
  created_timestamp`` (rows exist only for ``T <= W``; checked on read), so
  these are the versions the online store could have held at ``ts``, and the
  greatest ``(event_timestamp, created_timestamp)`` among them is what it held.

Putting the TTL into the join gives the same answer as "newest version, then
null if stale": if the newest version is stale, so is every older one.

Two offline rows with the same ``(key, event_timestamp, created_timestamp)``
make the answer ambiguous: the join raises ``StoreError`` rather than pick one.

When a view has a key-sorted copy (``training.compact``, written by a
compaction step after the transform), the join searches it with binary
searches instead (same answer, byte for byte; the tests compare both paths):
at 1M requests x 11.8M rows about a fifth of the hash join's time and ~15%
less peak memory. ``USE_COMPACT = False`` forces the DuckDB path.

Only the offline files whose parquet statistics can matter are read (event
time within ``[min ts - ttl, max ts]``; in ``as_known`` also created at or
before ``max ts``); the list of files read is returned so the manifest can
checksum exactly those.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.spec import FeatureService, FeatureView
from pitstore.training.join_sql import BAD_ROWS, unknown_sql, view_sql
from pitstore.training.sorted_join import (
    AmbiguousVersions,
    Compact,
    Part,
    join_view_sorted,
    open_compact,
    sort_requests,
)

MODES = ("as_known", "as_of")
ENGINES = ("duckdb", "spark")
TS = "ts"
ROW = "__row"
UTC_US = pa.timestamp("us", tz="UTC")
# Views with at most this many offline rows (in the files read) find their
# winners with an ASOF JOIN, larger ones with the bucketed hash join. Measured
# at 1M requests: merchant_daily (58k rows) 0.65 s CPU instead of 1.1 s, same
# memory; account_daily (2.9M rows) no faster and twice the memory.
ASOF_MAX_ROWS = 500_000
# Join from a view's key-sorted copy (``training.compact``) when it exists and
# still matches the run files; False: always the DuckDB path.
USE_COMPACT = True


class StoreError(RuntimeError):
    """The offline store cannot answer the join as asked (missing or corrupt data)."""


def feature_column(view: FeatureView, feature: str) -> str:
    return view.column(feature)


def feature_ts_column(view: FeatureView) -> str:
    return f"{view.name}__feature_ts"


def created_ts_column(view: FeatureView) -> str:
    return f"{view.name}__created_ts"


def feature_columns(service: FeatureService) -> list[str]:
    """The service's features as ``<view>__<feature>``, in spec order."""
    return [feature_column(v, f.name) for v in service.views for f in v.features]


@dataclass(frozen=True)
class FileStats:
    path: Path
    min_event: datetime | None
    max_event: datetime | None
    min_created: datetime | None
    max_created: datetime | None
    rows: int


def _stats(path: Path) -> FileStats:
    meta = pq.read_metadata(path)
    names = meta.schema.to_arrow_schema().names
    lo: dict[str, datetime | None] = {}
    hi: dict[str, datetime | None] = {}
    for col in ("event_timestamp", "created_timestamp"):
        idx = names.index(col)
        mins: list[datetime | None] = []
        maxs: list[datetime | None] = []
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(idx).statistics
            if st is None or not st.has_min_max:
                mins, maxs = [None], [None]
                break
            mins.append(st.min)
            maxs.append(st.max)
        known_min: list[datetime] = [m for m in mins if m is not None]
        known_max: list[datetime] = [m for m in maxs if m is not None]
        ok = bool(known_min) and len(known_min) == len(mins)
        lo[col] = min(known_min) if ok else None
        hi[col] = max(known_max) if ok else None
    return FileStats(
        path,
        lo["event_timestamp"],
        hi["event_timestamp"],
        lo["created_timestamp"],
        hi["created_timestamp"],
        meta.num_rows,
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)


def select_files(
    settings: Settings, view: FeatureView, mode: str, min_ts: datetime, max_ts: datetime
) -> list[Path]:
    """The view's offline files that can hold a value for requests in [min_ts, max_ts]."""
    directory = settings.offline_view_dir(view.name)
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise StoreError(
            f"offline store has no data for view {view.name!r} under {directory}: "
            "run `pitstore transform` first"
        )
    chosen = []
    for path in files:
        st = _stats(path)
        if st.rows == 0:
            continue
        lo_e, hi_e = _aware(st.min_event), _aware(st.max_event)
        lo_c = _aware(st.min_created)
        if hi_e is not None and hi_e < min_ts - view.ttl:
            continue
        if lo_e is not None and lo_e > max_ts:
            continue
        if mode == "as_known" and lo_c is not None and lo_c > max_ts:
            continue
        chosen.append(path)
    return chosen


def newest_watermark(settings: Settings, service: FeatureService) -> datetime | None:
    """The newest ``created_timestamp`` in any of the service's views (None: empty store)."""
    newest = None
    for view in service.views:
        for path in settings.offline_view_dir(view.name).glob("*.parquet"):
            st = _stats(path)
            hi = _aware(st.max_created)
            if hi is not None and (newest is None or hi > newest):
                newest = hi
    return newest


@dataclass
class JoinResult:
    """Features per request row (in request order) plus what was read."""

    table: pa.Table  # ROW + per view: features, feature_ts, created_ts
    files_read: dict[str, list[Path]] = field(default_factory=dict)
    unknown_entities: dict[str, int] = field(default_factory=dict)


def _view_columns(view: FeatureView) -> list[str]:
    return [
        *(feature_column(view, f.name) for f in view.features),
        feature_ts_column(view),
        created_ts_column(view),
    ]


def _null_part(view: FeatureView, n: int) -> list[pa.Array]:
    types = [pa.int64() if f.dtype == "int64" else pa.float64() for f in view.features]
    return [pa.nulls(n, t) for t in [*types, UTC_US, UTC_US]]


def join_view_duckdb(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView,
    mode: str,
    files: list[Path],
    min_ts: datetime,
    max_ts: datetime,
    n: int,
) -> tuple[list[pa.ChunkedArray | pa.Array], np.ndarray]:
    """One view's columns in request order, and which request rows got a value."""
    if not files:  # nothing in range: every value is missing
        return _null_part(view, n), np.zeros(n, dtype=bool)
    small = sum(pq.read_metadata(p).num_rows for p in files) <= ASOF_MAX_ROWS
    sql = view_sql(view, mode, files, min_ts, max_ts, _view_columns(view), asof=small)
    try:
        part = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        if BAD_ROWS in str(exc):
            raise StoreError(
                f"view {view.name}: offline rows have event_timestamp after "
                "created_timestamp (or null times); the store violates T <= W"
            ) from exc
        raise
    rows = part.column(ROW).to_numpy()
    # Back to request order by position (a scatter, no sort): take() with a
    # null index yields a null row, which is exactly "no value".
    taken = np.full(n, -1, dtype=np.int64)
    taken[rows] = np.arange(len(rows), dtype=np.int64)
    if len(rows) != int(np.count_nonzero(taken >= 0)):
        raise StoreError(
            f"view {view.name}: the offline store holds two rows for the same "
            "(key, event_timestamp, created_timestamp); the answer is ambiguous"
        )
    index = pa.array(taken, mask=taken < 0)
    cols = [part.column(name).take(index) for name in _view_columns(view)]
    return cols, taken >= 0


def count_unknown(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    view: FeatureView,
    req: pa.Table,
    answered: np.ndarray,
) -> int:
    """Request rows whose entity key never appears in the view's offline store.

    Only rows the join left without a value can be unknown, and not those
    whose key got a value in another row (it is in the store); only the keys
    left are looked up, in the key column alone. Usually none are left, and
    nothing is read.
    """
    if answered.all():
        return 0
    keys = req.column(view.entity.join_key)
    unmatched = keys.filter(pa.array(~answered))
    # Hash the few unmatched keys, not the answered ones (10x faster at 1M rows).
    candidates = pc.unique(unmatched)
    hit = pc.and_(pc.is_in(keys, value_set=candidates), pa.array(answered))
    seen = pc.unique(keys.filter(hit))
    left = unmatched.filter(pc.invert(pc.is_in(unmatched, value_set=seen)))
    if len(left) == 0:
        return 0
    files = sorted(settings.offline_view_dir(view.name).glob("*.parquet"))
    return keys_in_no_file(con, view, left, files)


def keys_in_no_file(
    con: duckdb.DuckDBPyConnection, view: FeatureView, keys: pa.Array, files: list[Path]
) -> int:
    """How many of ``keys`` appear in none of ``files`` (one scan of the key column)."""
    if not files:
        return len(keys)
    con.register("unmatched", pa.table({view.entity.join_key: keys}))
    try:
        return int(con.execute(unknown_sql(view, files)).fetchall()[0][0])
    finally:
        con.unregister("unmatched")


def _join_compacted_views(
    service: FeatureService,
    mode: str,
    compacts: dict[str, Compact | None],
    files: dict[str, list[Path]],
    req: pa.Table,
    threads: int | None,
) -> dict[str, Part | None]:
    """The views that have a sorted copy, joined from it on a pool of threads.

    The work is numpy and Arrow kernels, which release the GIL: the requests
    are sorted once per entity key, then the views run side by side, largest
    first. Run files newer than a view's copy (that can hold a value) are
    searched the same way, as they are (each is sorted). None for a view: its
    newer files need the DuckDB path.
    """
    views = [v for v in service.views if compacts[v.name] is not None]
    if not views:
        return {}
    n = req.num_rows
    ts_us = req.column(TS).cast(pa.int64()).to_numpy()
    workers = max(1, min(threads or os.cpu_count() or 1, len(views)))
    views.sort(key=lambda v: -int(compacts[v.name].meta["rows"]))  # type: ignore[union-attr]
    with ThreadPoolExecutor(workers) as pool:
        keys = sorted({v.entity.join_key for v in views})
        prep = {k: pool.submit(sort_requests, req.column(k), ts_us) for k in keys}

        def one(view: FeatureView) -> Part | None:
            compact = compacts[view.name]
            assert compact is not None
            fresh = set(compact.new_files)
            newer = [p for p in files[view.name] if p in fresh]
            sorted_req = prep[view.entity.join_key].result()
            try:
                return join_view_sorted(compact, newer, view, mode, sorted_req, n)
            except FileNotFoundError:  # a compaction replaced the copy meanwhile
                return None
            except AmbiguousVersions:
                raise StoreError(
                    f"view {view.name}: the offline store holds two rows for the same "
                    "(key, event_timestamp, created_timestamp); the answer is ambiguous"
                ) from None

        futures = {v.name: pool.submit(one, v) for v in views}
        return {name: f.result() for name, f in futures.items()}


def _count_unknown_compacted(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView,
    compact: Compact,
    part: Part,
    req: pa.Table,
) -> int:
    """Request rows whose key is in no run file: not in the copy nor a newer file."""
    _, answered, unknown = part
    left = unknown & ~answered
    if not left.any():
        return 0
    keys = req.column(view.entity.join_key).filter(pa.array(left))
    return keys_in_no_file(con, view, keys, compact.new_files)


def output_schema(service: FeatureService) -> pa.Schema:
    fields = [pa.field(ROW, pa.int64())]
    for view in service.views:
        for f in view.features:
            typ = pa.int64() if f.dtype == "int64" else pa.float64()
            fields.append(pa.field(feature_column(view, f.name), typ))
        fields.append(pa.field(feature_ts_column(view), UTC_US))
        fields.append(pa.field(created_ts_column(view), UTC_US))
    return pa.schema(fields)


def use_system_allocator() -> None:
    """Make the C library's malloc Arrow's default memory pool, for this process.

    Why: frames allocate and free many large, short-lived buffers on two
    threads, and Arrow's default (mimalloc) kept freed memory in per-thread
    heaps: a frame over 100k requests peaked at 306 MB with mimalloc and 245 MB
    with malloc, in the same time (measured, 0.11 s either way). Process-wide,
    so it belongs to entry points (``pitstore training-frame``, ``pitstore
    train``), not to library calls; ``ARROW_DEFAULT_MEMORY_POOL=system`` does
    the same from the environment.
    """
    pa.set_memory_pool(pa.system_memory_pool())


def point_in_time_join(
    settings: Settings,
    requests: pa.Table,
    service: FeatureService,
    mode: str = "as_known",
    engine: str = "duckdb",
    spark: object | None = None,
    threads: int | None = None,
) -> JoinResult:
    """Join every view of ``service`` onto validated ``requests``.

    ``requests`` has the entity keys of the service's views (strings, no
    nulls) and ``ts`` (timestamp[us, UTC]). The result has one row per
    request, in request order (column ``__row`` = request position).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
    keys = sorted({v.entity.join_key for v in service.views})
    req = requests.select([*keys, TS]).append_column(
        ROW, pa.array(np.arange(requests.num_rows, dtype=np.int64))
    )
    if req.num_rows == 0:
        raise ValueError("no request rows")
    ts_col = req.column(TS)
    min_ts = pc.min(ts_col).as_py()
    max_ts = pc.max(ts_col).as_py()
    files = {v.name: select_files(settings, v, mode, min_ts, max_ts) for v in service.views}
    if engine == "spark":
        from pitstore.training.spark_join import point_in_time_join_spark

        table = point_in_time_join_spark(spark, req, service, mode, files)
        return JoinResult(table.cast(output_schema(service)), files, {})

    # Every core (the default) unless told; row order is restored by
    # position, so DuckDB need not preserve insertion order (less buffering).
    config: dict[str, str | bool | int | float | list[str]] = {"preserve_insertion_order": False}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    try:
        con.execute("set timezone = 'UTC'")
        con.register("req", req)  # Arrow, scanned in place: no copy into DuckDB
        n = req.num_rows
        names = [ROW]
        columns: list[pa.ChunkedArray | pa.Array] = [req.column(ROW)]
        unknown: dict[str, int] = {}
        compacts = {
            v.name: open_compact(settings, v) if USE_COMPACT else None for v in service.views
        }
        sorted_part = _join_compacted_views(service, mode, compacts, files, req, threads)
        for view in service.views:
            compact = compacts[view.name]
            part = sorted_part.get(view.name)
            if compact is not None and part is not None:
                cols = list(part[0])
                unknown[view.name] = _count_unknown_compacted(con, view, compact, part, req)
            else:
                cols, answered = join_view_duckdb(
                    con, view, mode, files[view.name], min_ts, max_ts, n
                )
                unknown[view.name] = count_unknown(con, settings, view, req, answered)
            names += _view_columns(view)
            columns += cols
    finally:
        con.close()
    result = pa.Table.from_arrays(columns, names=names)
    return JoinResult(result.cast(output_schema(service)), files, unknown)
