"""Micro-benchmarks behind docs/decisions/0002 and 0003, measured in one run.

0002, the scoring read (benchmark #3's Redis part): one request = one fraud_v1
entity row = two HMGETs in one round trip, decoded by ``OnlineReader``.
Contenders, on the same Redis and event loop:

- ``resp_pool``: ``pitstore.online.resp_client.RespPool.execute`` (hand-written
  asyncio RESP client, hiredis parser, request pre-encoded by the reader);
- ``redis_asyncio_packed``: redis-py's asyncio pool, the same pre-encoded
  payload through the public ``send_packed_command`` / ``read_response``;
- ``redis_asyncio_pipeline``: redis-py's asyncio pipeline of ``hmget`` calls
  (redis-py packs the commands), the plain way to use the library.

Each sequentially (latency, µs per request) and with 32 requests in flight
(throughput, requests/s).

0003, the materialization write (benchmark #4): ``write_table`` of N entities
of account_daily into a flushed Redis, through the claim-checking write script:

- ``kernel``: ``resp_encode.hset_rows`` (numba) + pipelined packed EVALSHA;
- ``rows_packed``: the codec's row-wise encoding, same packed EVALSHA path;
- ``redis_py_pipeline``: the codec's row-wise encoding + redis-py's pipeline
  calling the registered script (``Script.__call__``) per batch.

``python -m bench.online_choices --entities 20000 --requests 20000`` prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis
import redis.asyncio as aredis

from bench.harness import machine_info, redis_server
from pitstore.core.spec import ACCOUNT_DAILY, FRAUD_V1, FeatureView
from pitstore.core.timeutil import to_us
from pitstore.online import codec, materialize, resp_encode
from pitstore.online.reader import OnlineReader
from pitstore.online.resp_client import RespPool

AT = datetime(2026, 1, 10, tzinfo=UTC)


def view_table(view: FeatureView, n: int, seed: int = 5) -> pa.Table:
    rng = random.Random(seed)
    prefix = "A" if view.entity.join_key == "account_id" else "M"
    data: dict[str, Any] = {
        view.entity.join_key: [f"{prefix}{i:06d}" for i in range(n)],
        "event_timestamp": [AT - timedelta(hours=rng.randrange(48)) for _ in range(n)],
    }
    for f in view.features:
        if f.dtype == "int64":
            data[f.name] = pa.array([rng.randrange(10**6) for _ in range(n)], pa.int64())
        else:
            data[f.name] = pa.array([rng.random() * 1e4 for _ in range(n)], pa.float64())
    return pa.table(data)


# --- 0003: the write path -------------------------------------------------------------


def write_kernel(client: redis.Redis, view: FeatureView, table: pa.Table, w_us: int) -> int:
    return materialize.write_table(client, view, table, w_us)


def write_rows_packed(client: redis.Redis, view: FeatureView, table: pa.Table, w_us: int) -> int:
    saved = resp_encode.KERNEL_MIN_ROWS
    resp_encode.KERNEL_MIN_ROWS = 10**12  # the row-wise branch of hset_rows
    try:
        return materialize.write_table(client, view, table, w_us)
    finally:
        resp_encode.KERNEL_MIN_ROWS = saved


def write_redis_py(client: redis.Redis, view: FeatureView, table: pa.Table, w_us: int) -> int:
    """The same script calls, built and sent by redis-py (one in flight, as above)."""
    script = client.register_script(materialize._WRITE_LUA)
    claim = materialize.CLAIM.format(view=view.name)
    per_row = resp_encode.args_per_row(view)
    pipe = client.pipeline(transaction=False)
    args: list[Any] = []
    n = 0
    for key, mapping in codec.encode_rows(view, table):
        args.append(key)
        for kv in mapping.items():
            args.extend(kv)
        n += 1
        if n % materialize.BATCH == 0:
            script(keys=[claim], args=[w_us, "HSET", per_row, *args], client=pipe)
            args = []
            if n % (materialize.BATCH * 4) == 0:
                pipe.execute()
    if args:
        script(keys=[claim], args=[w_us, "HSET", per_row, *args], client=pipe)
    pipe.execute()
    return n


def bench_write(url: str, entities: int, repeats: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    view = ACCOUNT_DAILY
    table = view_table(view, entities)
    w_us = to_us(AT)
    contenders = {
        "kernel": write_kernel,
        "rows_packed": write_rows_packed,
        "redis_py_pipeline": write_redis_py,
    }
    dumps = {}
    for name, fn in contenders.items():  # warm-up (numba load) and same-bytes check
        client.flushdb()
        client.set(materialize.CLAIM.format(view=view.name), w_us)
        fn(client, view, table, w_us)
        keys = [k for k in client.scan_iter(count=5000) if not k.startswith(b"pitstore:")]
        dumps[name] = {k: client.hgetall(k) for k in keys}
    assert dumps["kernel"] == dumps["rows_packed"] == dumps["redis_py_pipeline"]
    seconds: dict[str, list[float]] = {n: [] for n in contenders}
    for r in range(repeats):
        names = list(contenders)
        for name in names[r % 3 :] + names[: r % 3]:  # interleaved, rotating order
            client.flushdb()
            client.set(materialize.CLAIM.format(view=view.name), w_us)
            t0 = time.perf_counter()
            contenders[name](client, view, table, w_us)
            seconds[name].append(time.perf_counter() - t0)
    client.close()
    return {
        name: {
            "median_s": round(statistics.median(s), 4),
            "entities_per_s": round(entities / statistics.median(s)),
            "per_repeat_s": [round(x, 4) for x in s],
        }
        for name, s in seconds.items()
    }


# --- 0002: the scoring read -------------------------------------------------------------


class PackedRedisAsyncio:
    """redis-py's asyncio pool, fed the reader's pre-encoded payload (public API)."""

    def __init__(self, url: str) -> None:
        self.client = aredis.Redis.from_url(url)

    async def execute(self, payload: bytes, n_replies: int) -> list[Any]:
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(payload, check_health=False)
            return [await conn.read_response() for _ in range(n_replies)]
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)


async def bench_read(url: str, requests: int, accounts: int, repeats: int) -> dict[str, Any]:
    reader = OnlineReader(FRAUD_V1)
    rng = random.Random(9)
    rows = [
        {
            "account_id": f"A{rng.randrange(accounts):06d}",
            "merchant_id": f"M{rng.randrange(200):06d}",
        }
        for _ in range(requests)
    ]
    at_us = to_us(AT)
    pool = RespPool(url, connect_timeout_s=2)
    packed = PackedRedisAsyncio(url)
    plain = aredis.Redis.from_url(url)

    async def via_pool(row: dict[str, str]) -> Any:
        payload, n = reader.encode_hmgets([row])
        return reader.decode(await pool.execute(payload, n), [at_us])

    async def via_packed(row: dict[str, str]) -> Any:
        payload, n = reader.encode_hmgets([row])
        return reader.decode(await packed.execute(payload, n), [at_us])

    async def via_pipeline(row: dict[str, str]) -> Any:
        pipe = plain.pipeline(transaction=False)
        for g in reader.groups:
            pipe.hmget(reader.key(g, row[g.join_key]), list(g.fields))  # type: ignore[arg-type]
        return reader.decode(await pipe.execute(), [at_us])

    contenders = {
        "resp_pool": via_pool,
        "redis_asyncio_packed": via_packed,
        "redis_asyncio_pipeline": via_pipeline,
    }
    want = [r.values for r in await via_pool(rows[0])]
    for fn in contenders.values():  # warm-up and same-answer check
        assert [r.values for r in await fn(rows[0])] == want
        for row in rows[:500]:
            await fn(row)
    out: dict[str, Any] = {n: {"seq_us": [], "conc32_rps": []} for n in contenders}
    for r in range(repeats):
        names = list(contenders)
        for name in names[r % 3 :] + names[: r % 3]:
            fn = contenders[name]
            t0 = time.perf_counter()
            for row in rows:
                await fn(row)
            out[name]["seq_us"].append((time.perf_counter() - t0) / requests * 1e6)
            t0 = time.perf_counter()
            for lo in range(0, requests, 32):
                await asyncio.gather(*(fn(row) for row in rows[lo : lo + 32]))
            out[name]["conc32_rps"].append(requests / (time.perf_counter() - t0))
    await pool.aclose()
    await packed.client.aclose()
    await plain.aclose()
    return {
        n: {
            "seq_us_per_request": round(statistics.median(v["seq_us"]), 1),
            "conc32_requests_per_s": round(statistics.median(v["conc32_rps"])),
            "seq_us_per_repeat": [round(x, 1) for x in v["seq_us"]],
        }
        for n, v in out.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--read-repeats", type=int, default=3)
    parser.add_argument("--only", choices=("write", "read"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp), cores=[]) as server:
        client = redis.Redis.from_url(server.url)
        write = {} if args.only == "read" else bench_write(server.url, args.entities, args.repeats)
        client.flushdb()
        for view in FRAUD_V1.views:  # the entities the reads ask for
            n = args.entities if view.entity.join_key == "account_id" else 200
            for key, mapping in codec.encode_rows(view, view_table(view, n)):
                client.hset(key, mapping=mapping)  # type: ignore[arg-type]
        read = (
            {}
            if args.only == "write"
            else asyncio.run(
                bench_read(server.url, args.requests, args.entities, args.read_repeats)
            )
        )
        client.close()
    info = machine_info()
    report = {
        "machine": {"cpus": info.get("cpus"), "cpu": info.get("cpu_model")},
        "entities": args.entities,
        "requests": args.requests,
        "write_0003": write,
        "read_0002": read,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
