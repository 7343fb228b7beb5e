"""DuckDB SQL for one view of a point-in-time join (see ``training.joins``).

The request rows are the registered Arrow table ``req`` (``__row``, keys,
``ts``). Per view, one query answers every request row that has a value:

1. ``best``: hash-join the requests (the small build side: memory scales with
   the requests, not with the offline store) against the offline versions that
   qualify -- ``ts - ttl <= event_timestamp <= ts`` (``as_of``) or
   ``created_timestamp <= ts`` with ``event_timestamp >= ts - ttl``
   (``as_known``) -- and keep the greatest ``(event_timestamp,
   created_timestamp)`` per request row. The offline side is streamed, never
   sorted or materialised, which is what an ASOF JOIN cannot avoid (it sorts
   all offline rows: 1.4 GB for 9M rows of ``account_hourly``).
2. fetch that version's feature values with a second, streaming scan of the
   same rows, hash-joined on ``(key, ord)`` against the winners.

Request rows without a qualifying version are absent from the result (the
caller turns them into nulls). The TTL bound is part of the join, so no
version outside it is ever chosen: the result equals "newest version, then
null it if older than the TTL".
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pitstore.core.spec import FeatureView
from pitstore.core.timeutil import to_us

ROW = "__row"
# (event, created) as one orderable number: created_us < 1e16 until the year
# 2286. Measured: hugeint costs no more than a bigint encoding here (the
# aggregate and the join dominate), and it is exact for any timestamps.
_ORD_SHIFT = 10**16
BAD_ROWS = "pitstore: offline rows with event_timestamp after created_timestamp (or null)"


def sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _lit(value: datetime) -> str:
    return f"make_timestamptz({to_us(value)}::bigint)"


def _ord() -> str:
    # The integrity check rides on the first scan for free: a row with
    # event_timestamp > created_timestamp (or a null created_timestamp) makes
    # the query fail, which the caller reports as a StoreError. ``as_known``
    # relies on event_timestamp <= created_timestamp (DESIGN: rows exist
    # only for T <= W).
    return (
        "case when event_timestamp <= created_timestamp then "
        f"epoch_us(event_timestamp)::hugeint * {_ORD_SHIFT} + epoch_us(created_timestamp) "
        f"else error('{BAD_ROWS}') end"
    )


def _where(view: FeatureView, mode: str, min_ts: datetime, max_ts: datetime) -> str:
    # Pushed into read_parquet: only event times inside some request's TTL
    # window (and, as_known, versions created by the last request) are decoded.
    where = f"event_timestamp >= {_lit(min_ts - view.ttl)} and event_timestamp <= {_lit(max_ts)}"
    if mode == "as_known":
        where += f" and created_timestamp <= {_lit(max_ts)}"
    return where


def view_sql(
    view: FeatureView,
    mode: str,
    files: list[Path],
    min_ts: datetime,
    max_ts: datetime,
    out_names: list[str],
    asof: bool = False,
) -> str:
    """``(__row, features..., event_timestamp, created_timestamp)`` for answered rows.

    ``out_names`` names the output columns after ``__row``: one per feature,
    then the feature_ts and created_ts columns. ``asof`` finds the winners
    with an ASOF JOIN instead of the bucketed hash join (see ``_asof_best``).
    """
    key = view.entity.join_key
    src = f"read_parquet({sql_list(files)})"
    where = _where(view, mode, min_ts, max_ts)
    cols = ", ".join(f'"{f.name}"' for f in view.features)
    outs = [*(f'"{f.name}"' for f in view.features), "event_timestamp", "created_timestamp"]
    sel = ", ".join(f'f.{col} as "{name}"' for col, name in zip(outs, out_names, strict=True))
    best = (_asof_best if asof else _hash_best)(view, mode, src, where, min_ts)
    return f"""
with {best},
f as (
    select {key}, event_timestamp, created_timestamp, {cols},
           epoch_us(event_timestamp)::hugeint * {_ORD_SHIFT}
              + epoch_us(created_timestamp) as ord
    from {src} where {where}
)
select b.{ROW}, {sel}
from best b join f on f.{key} = b.{key} and f.ord = b.ord
"""


def _hash_best(view: FeatureView, mode: str, src: str, where: str, min_ts: datetime) -> str:
    """``best(__row, key, ord)`` by a hash join with the requests as build side."""
    key = view.entity.join_key
    ttl_us = int(view.ttl.total_seconds()) * 1_000_000
    # Time buckets of one TTL each: a version inside [ts - ttl, ts] lies in the
    # request's bucket or the one before, so (key, bucket) equality prunes the
    # hash join's candidates to about two TTLs per key instead of the key's
    # whole history (account_hourly at 1M x 9M rows: the join's time -25%).
    # Offsets from a base at or below every qualifying time keep them >= 0.
    base = to_us(min_ts - view.ttl)
    bucket = f"(epoch_us({{}}) - {base}) // {ttl_us}"
    on_time = "v.event_timestamp <= r.ts" if mode == "as_of" else "v.created_timestamp <= r.ts"
    return f"""rb as (
    select {ROW}, {key}, ts, unnest([{bucket.format("ts")}, {bucket.format("ts")} - 1]) as bk
    from req
),
v as (
    select {key}, event_timestamp, created_timestamp, {_ord()} as ord,
           {bucket.format("event_timestamp")} as bk
    from {src} where {where}
),
-- The key is grouped with the row (it is one per row) so that the final
-- join's two conditions both sit between best and f: when best had only the
-- row, DuckDB reordered the joins and matched on ord alone, which for daily
-- views pairs every account with every other (minutes instead of seconds).
best as materialized (
    select r.{ROW}, r.{key}, max(v.ord) as ord
    from rb r join v
      on r.{key} = v.{key} and r.bk = v.bk and {on_time}
     and v.event_timestamp >= r.ts - to_microseconds({ttl_us}::bigint)
    group by r.{ROW}, r.{key}
)"""


def _asof_best(view: FeatureView, mode: str, src: str, where: str, min_ts: datetime) -> str:
    """``best(__row, key, ord)`` by an ASOF JOIN: for views with few offline rows.

    The ASOF JOIN sorts the offline side (key and ord only), so it suits small
    views: merchant_daily at 1M requests x 58k rows takes about 60% of the
    hash join's CPU, while at 3M rows and more it needs about twice the
    memory. ``as_of``: the greatest ord up to ``(ts, any created)``.
    ``as_known``: what the online store held at ``ts`` is the greatest ord
    among the versions created by then, so each version carries the running
    maximum of ord over its key's versions in created order (peers included)
    and the ASOF JOIN takes the newest one created at or before ``ts``.
    Either way the TTL is ``event_timestamp >= ts - ttl``, i.e. ``ord >=
    (ts - ttl) * shift``.
    """
    del min_ts
    key = view.entity.join_key
    ttl_us = int(view.ttl.total_seconds()) * 1_000_000
    if mode == "as_of":
        side = f"select {key}, {_ord()} as ord from {src} where {where}"
        at, on = f"epoch_us(r.ts)::hugeint * {_ORD_SHIFT} + {_ORD_SHIFT - 1}", "o.ord"
    else:
        side = f"""select {key}, epoch_us(created_timestamp) as at,
               max({_ord()}) over (
                   partition by {key} order by created_timestamp
                   range between unbounded preceding and current row) as ord
            from {src} where {where}"""
        at, on = "epoch_us(r.ts)", "o.at"
    return f"""o as ({side}),
best as materialized (
    select r.{ROW}, r.{key}, o.ord
    from req r asof join o on r.{key} = o.{key} and {at} >= {on}
    where o.ord >= (epoch_us(r.ts) - {ttl_us})::hugeint * {_ORD_SHIFT}
)"""


def unknown_sql(view: FeatureView, files: list[Path]) -> str:
    """Rows of ``unmatched`` whose key is nowhere in ``files`` (a keys-only scan)."""
    key = view.entity.join_key
    return f"""
select count(*) from unmatched u
anti join (
    select distinct {key} from read_parquet({sql_list(files)})
    where {key} in (select {key} from unmatched)
) k on k.{key} = u.{key}
"""
