"""The scoring path's lean Redis client against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from test_serving import put_features

from pitstore.core.config import Settings
from pitstore.core.spec import FRAUD_V1
from pitstore.online.reader import reader_for, resp_command
from pitstore.online.resp_client import RespPool


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_read_async_returns_what_the_redis_py_read_returns(settings: Settings) -> None:
    put_features(settings.redis_url, {"A1": {"txn_count_1h": 3, "amount_mean_30d": 1234.5}}, {})
    put_features(settings.redis_url, {"M1": {}}, {})
    reader = reader_for(FRAUD_V1)
    rows = [
        {"account_id": "A1", "merchant_id": "M1"},
        {"account_id": "nobody", "merchant_id": "M1"},
    ]
    at = datetime.now(UTC) + timedelta(minutes=5)
    expected = reader.read(redis.Redis.from_url(settings.redis_url), rows, at)

    async def lean() -> list[Any]:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        try:
            first = await reader.read_async(pool, rows, at)
            again = await reader.read_async(pool, rows, at)  # on the pooled connection
            assert again == first
            return first
        finally:
            await pool.aclose()

    got = run(lean())
    assert got == expected
    assert got[0].values["account_hourly__txn_count_1h"] == 3
    assert got[1].views["account_hourly"].event_timestamp is None


def test_auth_and_database_from_the_url(settings: Settings) -> None:
    admin = redis.Redis.from_url(settings.redis_url)
    admin.acl_setuser("scorer", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    try:
        base = settings.redis_url.rsplit("/", 1)[0].replace("redis://", "redis://scorer:s3cret@")
        redis.Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + "/3").set("k", b"in db 3")

        async def get(url: str) -> list[Any]:
            pool = RespPool(url, connect_timeout_s=1.0)
            try:
                return await pool.execute(resp_command(b"GET", b"k"), 1)
            finally:
                await pool.aclose()

        assert run(get(base + "/3")) == [b"in db 3"]
        assert run(get(base + "/0")) == [None]
        wrong = base.replace("s3cret", "nope") + "/3"
        with pytest.raises(redis.exceptions.ConnectionError, match="Redis refused"):
            run(get(wrong))
    finally:
        admin.acl_deluser("scorer")
        redis.Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + "/3").flushdb()


def test_a_killed_pooled_connection_is_replaced_once(settings: Settings) -> None:
    admin = redis.Redis.from_url(settings.redis_url)

    async def scenario() -> None:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        try:
            [client_id] = await pool.execute(resp_command(b"CLIENT", b"ID"), 1)
            admin.client_kill_filter(_id=client_id)  # what a Redis restart does to the pool
            assert await pool.ping()  # the stale connection failed; a fresh one answered
            assert len(pool._idle) == 1
            [new_id] = await pool.execute(resp_command(b"CLIENT", b"ID"), 1)
            assert new_id != client_id
        finally:
            await pool.aclose()

    run(scenario())


def test_a_cancelled_exchange_never_returns_its_connection(settings: Settings) -> None:
    async def scenario() -> None:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        try:
            # BLPOP answers after 1 s: the deadline cancels the exchange first. The
            # connection would deliver that late reply to the next request if reused.
            slow = pool.execute(resp_command(b"BLPOP", b"no-such-list", b"1"), 1)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(slow, timeout=0.05)
            assert pool._idle == []
            assert await pool.execute(resp_command(b"ECHO", b"next"), 1) == [b"next"]
        finally:
            await pool.aclose()

    run(scenario())


def test_errors_are_redis_exceptions(settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed

    async def down() -> None:
        await RespPool(f"redis://127.0.0.1:{port}/0", connect_timeout_s=0.5).ping()

    with pytest.raises(redis.exceptions.ConnectionError, match="cannot connect"):
        run(down())

    async def wrong_type() -> None:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        try:
            await pool.execute(
                resp_command(b"SET", b"s", b"x") + resp_command(b"HGET", b"s", b"f"), 2
            )
        finally:
            await pool.aclose()

    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        run(wrong_type())


def test_sync_packed_read_heals_and_never_reuses_a_half_read_connection(
    settings: Settings,
) -> None:
    """pitstore.online_read.execute_packed: the sync read's one round trip."""
    from pitstore.online.reader import execute_packed

    put_features(settings.redis_url, {"A1": {"txn_count_1h": 3, "amount_mean_30d": 1.5}}, {})
    client = redis.Redis.from_url(settings.redis_url)
    reader = reader_for(FRAUD_V1)
    rows = [{"account_id": "A1", "merchant_id": "M1"}] * 3
    payload, n = reader.encode_hmgets(rows)
    with client.pipeline(transaction=False) as pipe:  # what redis-py's pipeline returns
        for row in rows:
            for g in reader.groups:
                pipe.hmget(reader.key(g, row[g.join_key]), g.fields)
        expected = pipe.execute()
    assert execute_packed(client, payload, n) == expected
    # The server drops the pooled connection (as on a restart): one retry heals.
    admin = redis.Redis.from_url(settings.redis_url)
    admin.client_kill_filter(_type="normal", skipme=True)
    assert execute_packed(client, payload, n) == expected
    # An error reply mid-batch: the error surfaces, and the connection holding the
    # unread replies is dropped, so the next read gets its own answers.
    client.set("plain-string", b"x")
    bad = resp_command(b"HMGET", b"plain-string", b"f") + payload
    with pytest.raises(redis.exceptions.ResponseError):
        execute_packed(client, bad, n + 1)
    assert execute_packed(client, payload, n) == expected
