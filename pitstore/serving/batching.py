"""One Redis round trip for the online reads of requests that arrive together.

Why: a read per request cost each request its own socket send and receive, the
event-loop wake-ups around them and redis-server's wake-up; on a 2-core VM
that was ~1.4 ms of CPU per request (profiled: ``socket.send`` alone), about
as much as scoring. Under load, many requests reach their read in the same
event-loop iteration: ``ReadBatcher`` sends all their ``HMGET``s as one
pipeline and hands each request its own row, so a request gets *cheaper* as
the load rises, where before the server's cost per request grew with it.

Nothing waits for a batch to fill: a lone request's read is sent on the next
loop iteration (``call_soon``), so it pays one iteration, not a timer. While a
round trip is out, the reads that come meanwhile wait for it and then leave
together (group commit). Why: with a batch per iteration, requests admitted in
small groups stayed in those groups (each group's completion admits the next
group of the same size), and under a Poisson load at 70% of the closed-loop
maximum the reads went 2-5 to a round trip instead of 14-16 (measured): the
server paid nearly per-request costs and fell behind. Waiting for the round
trip out merges groups, at a cost of at most one Redis round trip of latency.
A request's deadline is its own (``asyncio.wait_for`` on its future): a
request that gives up does not cancel the round trip the others share, and
the round trip has its own time limit so a hung Redis cannot pile tasks up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple

import redis

from pitstore.core.timeutil import to_us
from pitstore.online.reader import AsyncRedis, OnlineReader, OnlineReadError, OnlineRow


class _Waiting(NamedTuple):
    row: Mapping[str, str]
    at_us: int
    answer: asyncio.Future[OnlineRow]


class ReadBatcher:
    """Coalesce ``read`` calls made in one event-loop iteration into pipelined
    round trips of at most ``max_rows`` rows each (same keys, fields and
    decoding as ``OnlineReader.read_async``; row ``i``'s TTL is judged at its
    own ``at``)."""

    def __init__(
        self,
        reader: OnlineReader,
        client: AsyncRedis,
        timeout_s: float,
        max_rows: int = 64,
        on_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.reader = reader
        self.client = client
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.on_round_trip = on_round_trip  # seconds per round trip, ok or not (a metric)
        self.round_trips = 0  # counters, for metrics and tests
        self.rows_read = 0
        self._waiting: list[_Waiting] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False

    def read(self, row: Mapping[str, str], at: datetime) -> asyncio.Future[OnlineRow]:
        """The future of ``row``'s features at ``at``; OnlineReadError (raised now
        for a malformed row, or set on the future if Redis fails)."""
        self.reader.validate([row])
        at_us = to_us(at)  # refuses naive datetimes, before anything is queued
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[OnlineRow] = loop.create_future()
        # With no round trip out, the first read waiting schedules the send (the
        # others join it); with one out, its completion sends them.
        if not self._waiting and not self._in_flight:
            loop.call_soon(self._send)
        self._waiting.append(_Waiting(row, at_us, answer))
        return answer

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        live = [w for w in waiting if not w.answer.done()]  # not given up meanwhile
        for start in range(0, len(live), self.max_rows):
            task = asyncio.ensure_future(self._round_trip(live[start : start + self.max_rows]))
            self._in_flight.add(task)
            task.add_done_callback(self._round_trip_done)

    def _round_trip_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        # the reads that queued behind this wave leave together, now
        if not (self._in_flight or self._closed) and self._waiting:
            self._send()

    async def _round_trip(self, batch: list[_Waiting]) -> None:
        self.round_trips += 1
        self.rows_read += len(batch)
        try:
            payload, n_replies = self.reader.encode_hmgets([w.row for w in batch])
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    replies = await self.client.execute(payload, n_replies)
            finally:
                if self.on_round_trip is not None:
                    self.on_round_trip(time.perf_counter() - sent)
            rows = self.reader.decode(replies, [w.at_us for w in batch])
        except TimeoutError as exc:
            self._fail(batch, redis.exceptions.TimeoutError("online read timed out"), exc)
        except Exception as exc:  # every waiter gets an answer, whatever went wrong
            self._fail(batch, exc, exc)
        else:
            for w, row in zip(batch, rows, strict=True):
                if not w.answer.done():
                    w.answer.set_result(row)

    @staticmethod
    def _fail(batch: list[_Waiting], cause: BaseException, context: BaseException) -> None:
        for w in batch:
            if not w.answer.done():
                error = OnlineReadError(f"online read failed: {cause}")
                error.__cause__ = cause
                error.__context__ = context
                w.answer.set_exception(error)

    async def aclose(self) -> None:
        """Cancel the round trips in flight, and the reads waiting for one."""
        self._closed = True
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in self._waiting:
            w.answer.cancel()
        self._waiting = []
