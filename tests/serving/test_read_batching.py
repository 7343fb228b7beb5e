"""Coalesced online reads (serving.batching) against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from test_serving import put_features

from pitstore.core.config import Settings
from pitstore.core.spec import FRAUD_V1
from pitstore.online.reader import OnlineReadError, reader_for
from pitstore.online.resp_client import RespPool
from pitstore.serving.batching import ReadBatcher


def rows_and_times() -> list[tuple[dict[str, str], datetime]]:
    now = datetime.now(UTC)
    return [
        ({"account_id": "A1", "merchant_id": "M1"}, now),
        ({"account_id": "A2", "merchant_id": "M1"}, now + timedelta(minutes=5)),
        ({"account_id": "nobody", "merchant_id": "M1"}, now),
        # the same account far later: its hourly view is past its TTL there
        ({"account_id": "A1", "merchant_id": "M1"}, now + timedelta(days=3)),
    ]


def test_reads_of_one_iteration_share_one_round_trip(settings: Settings) -> None:
    accounts = {"A1": {"txn_count_1h": 3, "amount_mean_30d": 1234.5}, "A2": {"txn_count_1h": 1}}
    put_features(settings.redis_url, {**accounts, "M1": {}}, {})
    reader = reader_for(FRAUD_V1)
    asked = rows_and_times()
    plain = redis.Redis.from_url(settings.redis_url)
    expected = [reader.read(plain, [row], at)[0] for row, at in asked]

    async def batched() -> tuple[list[Any], ReadBatcher]:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        batcher = ReadBatcher(reader, pool, timeout_s=2.0)
        try:
            got = await asyncio.gather(*(batcher.read(row, at) for row, at in asked))
            return got, batcher
        finally:
            await batcher.aclose()
            await pool.aclose()

    got, batcher = asyncio.run(batched())
    assert got == expected  # each row judged at its own time
    assert batcher.round_trips == 1 and batcher.rows_read == 4
    assert got[0].values["account_hourly__txn_count_1h"] == 3
    assert got[3].views["account_hourly"].stale and not got[0].views["account_hourly"].stale


def test_batches_are_split_at_max_rows_and_skip_reads_given_up(settings: Settings) -> None:
    put_features(settings.redis_url, {"A1": {}, "M1": {}}, {})
    row = {"account_id": "A1", "merchant_id": "M1"}

    async def go() -> tuple[ReadBatcher, list[Any]]:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        batcher = ReadBatcher(reader_for(FRAUD_V1), pool, timeout_s=2.0, max_rows=2)
        try:
            futures = [batcher.read(row, datetime.now(UTC)) for _ in range(6)]
            futures[0].cancel()  # its deadline passed before the batch left
            got = await asyncio.gather(*futures[1:])
            return batcher, got
        finally:
            await batcher.aclose()
            await pool.aclose()

    batcher, got = asyncio.run(go())
    assert batcher.rows_read == 5 and batcher.round_trips == 3
    assert all(r.views["account_daily"].event_timestamp is not None for r in got)


class HeldPool:
    """The real pool, with each round trip held until the test lets it go: the
    reads that come while one is out must wait for it, then leave together."""

    def __init__(self, pool: RespPool) -> None:
        self.pool = pool
        self.release = asyncio.Event()
        self.calls = 0

    async def execute(self, payload: bytes, n_replies: int) -> list[Any]:
        self.calls += 1
        await self.release.wait()
        return await self.pool.execute(payload, n_replies)


def test_reads_arriving_during_a_round_trip_leave_together_after_it(settings: Settings) -> None:
    accounts = {"A1": {"txn_count_1h": 3}, "A2": {"txn_count_1h": 1}}
    put_features(settings.redis_url, {**accounts, "M1": {}}, {})
    reader = reader_for(FRAUD_V1)
    asked = rows_and_times()
    plain = redis.Redis.from_url(settings.redis_url)
    expected = [reader.read(plain, [row], at)[0] for row, at in asked]

    async def go() -> tuple[list[Any], ReadBatcher, int]:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        held = HeldPool(pool)
        batcher = ReadBatcher(reader, held, timeout_s=2.0)  # type: ignore[arg-type]
        try:
            futures = [batcher.read(*asked[0])]
            for _ in range(3):
                await asyncio.sleep(0)  # the first read's round trip is out
            assert held.calls == 1
            for row, at in asked[1:]:  # three more, each in an iteration of its own
                futures.append(batcher.read(row, at))
                await asyncio.sleep(0)
            calls_while_out = held.calls
            held.release.set()
            got = await asyncio.gather(*futures)
            return got, batcher, calls_while_out
        finally:
            await batcher.aclose()
            await pool.aclose()

    got, batcher, calls_while_out = asyncio.run(go())
    assert calls_while_out == 1  # nothing left while the first round trip was out
    assert batcher.round_trips == 2 and batcher.rows_read == 4  # then the three, as one
    assert got == expected


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failed_round_trip_answers_every_waiter() -> None:
    async def go() -> list[BaseException]:
        pool = RespPool(f"redis://127.0.0.1:{closed_port()}/0", connect_timeout_s=0.5)
        batcher = ReadBatcher(reader_for(FRAUD_V1), pool, timeout_s=1.0)
        row = {"account_id": "A1", "merchant_id": "M1"}
        futures = [batcher.read(row, datetime.now(UTC)) for _ in range(3)]
        return await asyncio.gather(*futures, return_exceptions=True)

    errors = asyncio.run(go())
    assert all(isinstance(e, OnlineReadError) for e in errors)
    assert all(isinstance(e.__cause__, redis.exceptions.ConnectionError) for e in errors)


def test_a_malformed_row_is_refused_before_anything_is_queued(settings: Settings) -> None:
    async def go() -> ReadBatcher:
        pool = RespPool(settings.redis_url, connect_timeout_s=1.0)
        batcher = ReadBatcher(reader_for(FRAUD_V1), pool, timeout_s=1.0)
        with pytest.raises(OnlineReadError, match="needs exactly"):
            batcher.read({"account_id": "A1"}, datetime.now(UTC))
        with pytest.raises(ValueError):
            batcher.read({"account_id": "A1", "merchant_id": "M1"}, datetime(2026, 1, 1))
        await asyncio.sleep(0)
        await pool.aclose()
        return batcher

    assert asyncio.run(go()).round_trips == 0


@pytest.mark.parametrize(("max_in_flight", "round_trips"), [(1, 6), (16, 1)])
def test_concurrent_decisions_share_reads_within_the_admission_bound(
    settings: Settings, max_in_flight: int, round_trips: int
) -> None:
    from test_serving import CALM, MERCHANT, RISKY, serving_settings, train_tiny_model, txn

    from pitstore.serving.app import load_model
    from pitstore.serving.audit import AuditLog, count_records
    from pitstore.serving.auth import CardTokenizer
    from pitstore.serving.metrics import Metrics
    from pitstore.serving.schemas import ScoreRequest
    from pitstore.serving.service import ScoringService

    train_tiny_model(settings.home)
    put_features(settings.redis_url, {**RISKY, **CALM, **MERCHANT}, {})
    ss = serving_settings(settings, max_in_flight=max_in_flight, budget_ms=2000)
    requests = [
        ScoreRequest.model_validate(
            txn(transaction_id=f"t-{i}", account_id=("A_RISKY", "A_CALM")[i % 2])
        )
        for i in range(6)
    ]

    async def go() -> tuple[list[dict[str, Any]], ReadBatcher]:
        audit = AuditLog(ss.resolved_audit_dir)
        tokens = CardTokenizer(bytes(32))
        service = ScoringService(ss, load_model(ss), audit, Metrics(), tokens)
        try:
            now, arrived = datetime.now(UTC), time.perf_counter()
            done = await asyncio.gather(*(service.score(r, arrived, now) for r in requests))
            assert service.reads is not None
            return [a.record for a in done if a.record is not None], service.reads
        finally:
            await service.aclose()

    records, reads = asyncio.run(go())
    assert reads.round_trips == round_trips and reads.rows_read == 6
    assert [r["transaction_id"] for r in records] == [f"t-{i}" for i in range(6)]
    assert all(r["fallback"] is False for r in records)  # each got its own account's row
    assert records[0]["features"]["account_hourly"]["values"]["txn_count_1h"] == 9
    assert records[1]["features"]["account_hourly"]["values"]["txn_count_1h"] == 0
    assert count_records(ss.resolved_audit_dir) == 6
