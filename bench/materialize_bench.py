"""Benchmark #4: load one view's newest values into Redis, rows/s.

Contenders write the same rows (per entity, the newest event timestamp, then
the newest created timestamp, at W) from the same offline parquet into the
same, freshly flushed Redis:

- ``pitstore``: ``pitstore.online.materialize.materialize_view(..., full=True)``
  (HSETs encoded column-wise, pipelined batches of a claim-checking script,
  every reply checked, marker moved last);
- ``feast``: ``FeatureStore.materialize(start, W, feature_views=[view])``,
  Feast's default local engine;
- ``raw``: a hand-written loader a user might write instead: one DuckDB query
  for the newest rows, values encoded by hand, pipelined ``HSET`` without
  transactions, 10k commands per round trip.

Before timing, each contender's Redis contents (every key, every field, every
byte) are dumped and compared.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import redis

from bench.harness import START, bulk_runs, ratio
from pitstore.core.config import Settings
from pitstore.core.spec import FeatureView
from pitstore.core.timeutil import to_us

# The raw baseline writes the same bytes (the codec's); only the write path is measured.
from pitstore.online import codec

GOAL = {"vs_feast_min": 4.0, "vs_raw_min": 0.7}
RAW_BATCH = 10_000


class OutputMismatch(AssertionError):
    pass


def raw_load(settings: Settings, view: FeatureView, watermark: datetime) -> int:
    """The hand-written baseline: DuckDB newest rows -> hand-encoded pipelined HSET."""
    key = view.entity.join_key
    w_us = to_us(watermark)
    glob = str(settings.offline_view_dir(view.name) / "run-*.parquet")
    feats = [f.name for f in view.features]
    cols = ", ".join(f'"{f}"' for f in feats)
    con = duckdb.connect()
    rows = con.execute(
        f"select {key}, epoch_us(event_timestamp), {cols} from read_parquet('{glob}') "
        f"where epoch_us(event_timestamp) <= {w_us} and epoch_us(created_timestamp) <= {w_us} "
        f"qualify row_number() over (partition by {key} "
        "order by event_timestamp desc, created_timestamp desc) = 1"
    ).fetchall()
    con.close()
    fields = codec.view_fields(view)
    int64, double = codec.encode_int64, codec.encode_double
    encoders = [int64 if f.dtype == "int64" else double for f in view.features]
    ts_field = codec.ts_field(view.name)
    client = redis.Redis.from_url(settings.redis_url)
    pipe = client.pipeline(transaction=False)
    n = 0
    for row in rows:
        mapping = {ts_field: codec.encode_timestamp_us(row[1])}
        for i, value in enumerate(row[2:]):
            mapping[fields[i]] = encoders[i](value)
        pipe.hset(codec.entity_key(key, row[0]), mapping=mapping)  # type: ignore[arg-type]
        n += 1
        if n % RAW_BATCH == 0:
            pipe.execute()
    pipe.execute()
    client.close()
    return n


def dump(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    """Every feature hash in the database (pitstore's own marker keys excluded)."""
    keys = [k for k in client.scan_iter(count=10_000) if not k.startswith(b"pitstore:")]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    return dict(zip(keys, pipe.execute(), strict=True))


def run(settings: Settings, view: FeatureView, watermark: datetime, repeats: int) -> dict[str, Any]:
    from pitstore.core.feast_store import get_store
    from pitstore.online.materialize import materialize_view

    store = get_store(settings)
    client = redis.Redis.from_url(settings.redis_url)

    def pit() -> int:
        return materialize_view(settings, view, watermark, full=True).entities_written

    def feast() -> None:
        store.materialize(START, watermark, feature_views=[view.name])

    def raw() -> int:
        return raw_load(settings, view, watermark)

    contenders = {"pitstore": pit, "feast": feast, "raw": raw}
    dumps: dict[str, dict[bytes, dict[bytes, bytes]]] = {}
    for name, fn in contenders.items():  # verification pass (also the warm-up)
        client.flushdb()
        fn()
        dumps[name] = dump(client)
    entities = len(dumps["pitstore"])
    for name in ("feast", "raw"):
        if dumps[name] != dumps["pitstore"]:
            a, b = dumps["pitstore"], dumps[name]
            only = len(a.keys() ^ b.keys())
            diff = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
            raise OutputMismatch(
                f"Redis after {name} differs from pitstore's: {only} keys in one only, "
                f"{diff} hashes differ"
            )
    fields = sum(len(h) for h in dumps["pitstore"].values())
    del dumps
    timing = bulk_runs(contenders, repeats, setup=lambda _name: None if client.flushdb() else None)
    client.flushdb()
    client.close()
    for t in timing.values():
        t["rows_per_s"] = entities / t["seconds"]
    p, f, r = (timing[n]["rows_per_s"] for n in ("pitstore", "feast", "raw"))
    vs_feast, vs_raw = ratio(p, f), ratio(p, r)
    return {
        "measurable": True,
        "view": view.name,
        "entities": entities,
        "redis_fields": fields,
        "verified": True,
        "timing": timing,
        "ratios": {"rows_per_s_vs_feast": vs_feast, "rows_per_s_vs_raw": vs_raw},
        "goal": {
            "vs_feast_min": GOAL["vs_feast_min"],
            "vs_raw_min": GOAL["vs_raw_min"],
            "met": bool(
                vs_feast is not None
                and vs_raw is not None
                and vs_feast >= GOAL["vs_feast_min"]
                and vs_raw >= GOAL["vs_raw_min"]
            ),
        },
    }
