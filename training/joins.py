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

The DuckDB engine uses ``ASOF JOIN`` instead of Feast's range join + ROW_NUMBER:

- ``as_of``: keep the newest version of every ``(key, event_timestamp)``, then
  ASOF-join on ``event_timestamp <= ts``.
- ``as_known``: every row has ``event_timestamp <= created_timestamp`` (rows
  exist only for ``T <= W``; checked on read), so ``created_timestamp <= ts``
  implies ``event_timestamp <= ts``. The answer at ``ts`` is then the running
  arg-max of ``(event_timestamp, created_timestamp)`` over the runs with
  ``created_timestamp <= ts``: one state per (key, run), ASOF-joined on
  ``created_timestamp <= ts``.

Only the offline files whose parquet statistics can matter are read (event
time within ``[min ts - ttl, max ts]``; in ``as_known`` also created at or
before ``max ts``), and rows are filtered to the requested keys; the list of
files read is returned so the manifest can checksum exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.config import Settings
from pitstore.spec import FeatureService, FeatureView
from pitstore.timeutil import to_us

MODES = ("as_known", "as_of")
ENGINES = ("duckdb", "spark")
TS = "ts"
ROW = "__row"
UTC_US = pa.timestamp("us", tz="UTC")
_ORD_SHIFT = 10**16  # created_us < 1e16 until the year 2286


class StoreError(RuntimeError):
    """The offline store cannot answer the join as asked (missing or corrupt data)."""


def feature_column(view: FeatureView, feature: str) -> str:
    return f"{view.name}__{feature}"


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


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _ttl_us(view: FeatureView) -> int:
    return int(view.ttl.total_seconds()) * 1_000_000


def _lit(value: datetime) -> str:
    return f"make_timestamptz({to_us(value)}::bigint)"


def _source_sql(
    view: FeatureView, mode: str, files: list[Path], min_ts: datetime, max_ts: datetime
) -> str:
    """The offline rows that can answer the requests in ``req``, read once."""
    key = view.entity.join_key
    cols = ", ".join(f'"{f.name}"' for f in view.features)
    # Pushed-down filters: only the files chosen by statistics, only requested
    # keys, only event times that can be inside some request's TTL window.
    where = (
        f"{key} in (select distinct {key} from req) "
        f"and event_timestamp >= {_lit(min_ts - view.ttl)} "
        f"and event_timestamp <= {_lit(max_ts)}"
    )
    if mode == "as_known":
        where += f" and created_timestamp <= {_lit(max_ts)}"
    return (
        f"select {key}, event_timestamp, created_timestamp, {cols} "
        f"from read_parquet({_sql_list(files)}) where {where}"
    )


def _view_sql(view: FeatureView, mode: str, src: str) -> str:
    """SQL answering one view for ``req`` (ROW, keys, ts) from the rows in ``src``."""
    key = view.entity.join_key
    feats = [f.name for f in view.features]
    ttl_us = _ttl_us(view)
    ok = f"(v.event_timestamp >= r.ts - to_microseconds({ttl_us}::bigint)) as ok"
    out_cols = ", ".join(
        f'case when ok then j."{f}" end as "{feature_column(view, f)}"' for f in feats
    )
    tail = (
        f"select j.{ROW}, {out_cols}, "
        f'case when ok then j.event_timestamp end as "{feature_ts_column(view)}", '
        f'case when ok then j.created_timestamp end as "{created_ts_column(view)}" from j'
    )
    if mode == "as_of":
        return (
            f"with v as ({src} qualify row_number() over (partition by {key}, "
            "event_timestamp order by created_timestamp desc) = 1), "
            f"j as (select r.{ROW}, v.*, {ok} from req r asof left join v "
            f"on r.{key} = v.{key} and r.ts >= v.event_timestamp) {tail}"
        )
    ord_expr = f"epoch_us(event_timestamp)::hugeint * {_ORD_SHIFT} + epoch_us(created_timestamp)"
    return (
        f"with v as (select *, {ord_expr} as ord from ({src})), "
        f"runs as (select {key}, created_timestamp as c, max(ord) as run_best "
        "from v group by all), "
        f"states as (select {key}, c, max(run_best) over (partition by {key} order by c "
        "rows between unbounded preceding and current row) as best from runs), "
        f"s as (select r.{ROW}, r.ts, r.{key}, st.best from req r asof left join states st "
        f"on r.{key} = st.{key} and r.ts >= st.c), "
        f"j as (select r.{ROW}, v.*, {ok} from s r left join v "
        f"on v.{key} = r.{key} and v.ord = r.best) {tail}"
    )


def join_view_duckdb(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView,
    mode: str,
    files: list[Path],
    min_ts: datetime,
    max_ts: datetime,
) -> pa.Table:
    feats = [f.name for f in view.features]
    if not files:  # nothing in range: every value is missing
        nulls = ", ".join(
            f'null::{_duck_type(view, f)} as "{feature_column(view, f)}"' for f in feats
        )
        sql = (
            f'select {ROW}, {nulls}, null::timestamptz as "{feature_ts_column(view)}", '
            f'null::timestamptz as "{created_ts_column(view)}" from req'
        )
    else:
        # One scan of the parquet: the rows the join can use go to a temp table,
        # which both the integrity check and the join then read.
        con.execute(
            "create or replace temp table src as " + _source_sql(view, mode, files, min_ts, max_ts)
        )
        bad = con.execute(
            "select count(*) from src "
            "where event_timestamp > created_timestamp or event_timestamp is null "
            "or created_timestamp is null"
        ).fetchall()[0][0]
        if bad:
            raise StoreError(
                f"view {view.name}: {bad} offline rows have event_timestamp after "
                "created_timestamp (or null times); the store violates T <= W"
            )
        sql = _view_sql(view, mode, "select * from src")
    return con.sql(f"select * from ({sql}) order by {ROW}").to_arrow_table()


def _duck_type(view: FeatureView, feature: str) -> str:
    f = next(x for x in view.features if x.name == feature)
    return "bigint" if f.dtype == "int64" else "double"


def count_unknown(con: duckdb.DuckDBPyConnection, settings: Settings, view: FeatureView) -> int:
    """Request rows whose entity key never appears in the view's offline store."""
    key = view.entity.join_key
    files = sorted(settings.offline_view_dir(view.name).glob("*.parquet"))
    if not files:
        return int(con.execute("select count(*) from req").fetchall()[0][0])
    return int(
        con.execute(
            f"select count(*) from req where {key} not in "
            f"(select distinct {key} from read_parquet({_sql_list(files)}))"
        ).fetchall()[0][0]
    )


def output_schema(service: FeatureService) -> pa.Schema:
    fields = [pa.field(ROW, pa.int64())]
    for view in service.views:
        for f in view.features:
            typ = pa.int64() if f.dtype == "int64" else pa.float64()
            fields.append(pa.field(feature_column(view, f.name), typ))
        fields.append(pa.field(feature_ts_column(view), UTC_US))
        fields.append(pa.field(created_ts_column(view), UTC_US))
    return pa.schema(fields)


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
        ROW, pa.array(range(requests.num_rows), pa.int64())
    )
    if req.num_rows == 0:
        raise ValueError("no request rows")
    ts_col = req.column(TS)
    import pyarrow.compute as pc

    min_ts = pc.min(ts_col).as_py()
    max_ts = pc.max(ts_col).as_py()
    files = {v.name: select_files(settings, v, mode, min_ts, max_ts) for v in service.views}
    if engine == "spark":
        from training.spark_join import point_in_time_join_spark

        table = point_in_time_join_spark(spark, req, service, mode, files)
        return JoinResult(table.cast(output_schema(service)), files, {})

    con = duckdb.connect(config={"threads": threads} if threads else {})
    try:
        con.execute("set timezone = 'UTC'")
        con.register("req_arrow", req)
        con.execute("create temp table req as select * from req_arrow")
        result = req.select([ROW])
        unknown: dict[str, int] = {}
        for view in service.views:
            part = join_view_duckdb(con, view, mode, files[view.name], min_ts, max_ts)
            for name in part.column_names[1:]:
                result = result.append_column(name, part.column(name))
            unknown[view.name] = count_unknown(con, settings, view)
    finally:
        con.close()
    return JoinResult(result.cast(output_schema(service)), files, unknown)
