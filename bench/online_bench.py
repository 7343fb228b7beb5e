"""Benchmarks #1 and #2: online fetch of a feature service, one row and 100 rows.

Contenders, on the same Redis and the same client process settings:

- ``pitstore``: ``pitstore.online.reader.read_features`` (one pipelined HMGET
  round trip, Feast's key/field layout, precomputed per service);
- ``feast``: ``FeatureStore.get_online_features(...).to_dict()`` with the
  service's feature service object (looked up once, outside the timing);
- ``raw``: redis-py pipelined ``HGETALL`` of the same keys with the keys
  precomputed and nothing decoded -- the floor for any Python client.

Before timing, the three outputs are compared value by value (raw's hashes are
decoded with Feast's protobufs for the check only).
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import redis

from bench.harness import client_cores, latency_samples, pinned, ratio
from pitstore.core.config import Settings
from pitstore.core.spec import FRAUD_V1, FeatureService

GOALS = {
    "online_1": {"vs_feast_p99": 0.5, "vs_raw_p99": 2.0},
    "online_100": {"vs_feast_p99": 0.2, "vs_raw_p99": 1.5},
}


class OutputMismatch(AssertionError):
    pass


def _feast_rows(response: dict[str, list[Any]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    n = len(next(iter(response.values())))
    return [{name: response[name][i] for name in names} for i in range(n)]


def _decode_raw(
    service: FeatureService, hashes: list[dict[bytes, bytes]], n_rows: int
) -> list[dict[str, Any]]:
    from feast.protos.feast.types.Value_pb2 import Value

    from pitstore.online.codec import feature_field

    groups = list(dict.fromkeys(v.entity.join_key for v in service.views))
    out: list[dict[str, Any]] = []
    for r in range(n_rows):
        row: dict[str, Any] = {}
        for gi, join_key in enumerate(groups):
            h = hashes[r * len(groups) + gi]
            for v in (v for v in service.views if v.entity.join_key == join_key):
                for f in v.features:
                    raw = h.get(feature_field(v.name, f.name))
                    if raw is None:
                        row[v.column(f)] = None
                        continue
                    proto = Value.FromString(raw)
                    kind = proto.WhichOneof("val")
                    row[v.column(f)] = None if kind is None else getattr(proto, kind)
        out.append(row)
    return out


def verify(
    pit: list[dict[str, Any]], feast: list[dict[str, Any]], raw: list[dict[str, Any]]
) -> int:
    """Every value equal across the three (exact; floats are the stored doubles)."""
    if not (len(pit) == len(feast) == len(raw)):
        raise OutputMismatch(f"row counts differ: {len(pit)}, {len(feast)}, {len(raw)}")
    checked = 0
    for i, (a, b, c) in enumerate(zip(pit, feast, raw, strict=True)):
        if a != b:
            diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
            raise OutputMismatch(f"row {i}: pitstore != feast: {diff}")
        if a != c:
            diff = {k: (a.get(k), c.get(k)) for k in a.keys() | c.keys() if a.get(k) != c.get(k)}
            raise OutputMismatch(f"row {i}: pitstore != raw HGETALL: {diff}")
        checked += sum(v is not None for v in a.values())
    return checked


def run(
    settings: Settings,
    accounts: list[str],
    merchants: list[str],
    at: datetime,
    samples_1: int,
    samples_100: int,
    repeats: int,
    seed: int = 3,
) -> dict[str, Any]:
    from pitstore.core.feast_store import get_store
    from pitstore.online.reader import read_features, reader_for

    service = FRAUD_V1
    store = get_store(settings)
    feast_service = store.get_feature_service(service.name)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    reader = reader_for(service)
    names = reader.output_names
    rng = random.Random(seed)
    results: dict[str, Any] = {}
    for label, batch, samples in (("online_1", 1, samples_1), ("online_100", 100, samples_100)):
        rows = [
            {"account_id": rng.choice(accounts), "merchant_id": rng.choice(merchants)}
            for _ in range(batch)
        ]
        raw_keys = [reader.key(g, row[g.join_key]) for row in rows for g in reader.groups]

        def pit(rows: list[dict[str, str]] = rows) -> list[Any]:
            # apply_ttl=False: exactly what Feast's get_online_features returns.
            return read_features(client, service, rows, at, apply_ttl=False)

        def feast(rows: list[dict[str, str]] = rows) -> dict[str, list[Any]]:
            return store.get_online_features(
                features=feast_service, entity_rows=rows, full_feature_names=True
            ).to_dict()

        def raw(keys: list[bytes] = raw_keys) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)  # type: ignore[arg-type]
            return pipe.execute()

        checked = verify(
            [r.values for r in pit()],
            _feast_rows(feast(), names),
            _decode_raw(service, raw(), batch),
        )
        with pinned(client_cores()):
            timing = latency_samples(
                {"pitstore": pit, "feast": feast, "raw": raw},
                samples=samples,
                repeats=repeats,
                warmup=max(20, samples // 20),
            )
        p, f, r = (timing[n]["p99_ms"] for n in ("pitstore", "feast", "raw"))
        vs_feast, vs_raw = ratio(p, f), ratio(p, r)
        goal = GOALS[label]
        results[label] = {
            "measurable": True,
            "entity_rows": batch,
            "redis_keys_per_call": len(raw_keys),
            "verified": True,
            "values_compared": checked,
            "timing": timing,
            "ratios": {
                "p99_vs_feast": vs_feast,
                "p99_vs_raw": vs_raw,
                "p50_vs_feast": ratio(timing["pitstore"]["p50_ms"], timing["feast"]["p50_ms"]),
                "p50_vs_raw": ratio(timing["pitstore"]["p50_ms"], timing["raw"]["p50_ms"]),
            },
            "goal": {
                "p99_vs_feast_max": goal["vs_feast_p99"],
                "p99_vs_raw_max": goal["vs_raw_p99"],
                "met": bool(
                    vs_feast is not None
                    and vs_raw is not None
                    and vs_feast <= goal["vs_feast_p99"]
                    and vs_raw <= goal["vs_raw_p99"]
                ),
            },
        }
    client.close()
    return results
