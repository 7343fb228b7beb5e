"""A minimal HTTP/1.1 keep-alive load client on asyncio, for benchmark #3 only.

httpx costs ~1 ms of client CPU per request, so it saturated before the no-op
server did and its own queueing showed up as "server" latency. This client
sends pre-encoded requests over a fixed set of keep-alive connections and
parses only the status line, ``content-length`` and the body bytes (bodies are
checked after the run, off the clock), so one core drives several thousand
requests per second.

Two loads:

- ``closed_loop``: ``connections`` workers, each sending its next request as
  soon as the previous answer arrives, for ``seconds``: the server's maximum
  throughput when it, not the client, is the bottleneck.
- ``open_loop``: requests are *scheduled* at Poisson arrival times for a target
  rate, whatever the server's state, and each latency is measured from its
  scheduled time. A slow answer delays later sends only when every connection
  is busy, and then the wait counts for each request queued behind it (no
  coordinated omission). The send lateness is reported: with idle connections
  it is the client's own lag, which must stay small.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np


def encode_post(host: str, port: int, path: str, body: bytes, headers: str = "") -> bytes:
    """``headers``: extra header lines, each ending in CRLF (e.g. authorization)."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n{headers}"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:  # uvicorn always sends one for these JSON answers
            raise ValueError(f"response without content-length: {head[:200]!r}")
        end = lower.index(b"\r\n", at + 2)
        body = await self.reader.readexactly(int(lower[at + 17 : end]))
        return status, body

    def close(self) -> None:
        self.writer.close()


SPIN_S = 0.002  # an open-loop sender sleeps until this close to a due time, then yields


def _ms(seconds: list[float]) -> np.ndarray:
    """Durations in ms; one zero for an empty list, so percentiles stay defined."""
    return np.array(seconds) * 1000 if seconds else np.zeros(1)


@dataclass
class Run:
    """One load run: per-request results in send order (index into the request list)."""

    kind: str
    seconds: float
    indices: list[int] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    # Open loop, per request: how late it was sent (sent - scheduled), and the part
    # of that which is the client's own lag (sent - the later of scheduled and the
    # moment a connection was free for it). The rest waited for a free connection:
    # every one was busy, which is the server's backlog, not the client's.
    send_lag_s: list[float] = field(default_factory=list)
    client_lag_s: list[float] = field(default_factory=list)
    transport_errors: int = 0
    target_rps: float | None = None

    def record(self, index: int, status: int, body: bytes, latency_s: float) -> None:
        self.latencies_s.append(latency_s)
        self.indices.append(index)
        self.statuses.append(status)
        self.bodies.append(body)

    def summary(self) -> dict[str, object]:
        lat = _ms(self.latencies_s)
        out: dict[str, object] = {
            "load": self.kind,
            "requests": len(self.statuses),
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(len(self.statuses) / self.seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "max_ms": round(float(lat.max()), 3),
            "transport_errors": self.transport_errors,
        }
        if self.target_rps is not None:
            out["target_rps"] = round(self.target_rps, 1)
            out["send_late_p99_ms"] = round(float(np.percentile(_ms(self.send_lag_s), 99)), 3)
            out["client_send_lag_p99_ms"] = round(
                float(np.percentile(_ms(self.client_lag_s), 99)), 3
            )
        return out


async def _open_all(host: str, port: int, n: int) -> list[Connection]:
    return list(await asyncio.gather(*(Connection.open(host, port) for _ in range(n))))


async def closed_loop(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float
) -> Run:
    """Saturating load: ``connections`` requests always in flight, for ``seconds``
    (or until ``requests`` run out)."""
    conns = await _open_all(host, port, connections)
    quiesce_gc()
    run = Run("closed", 0.0)
    next_index = 0
    start = time.perf_counter()
    stop_at = start + seconds

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(requests) and time.perf_counter() < stop_at:
            i = next_index
            next_index += 1
            sent = time.perf_counter()
            try:
                status, body = await conn.request(requests[i])
            except (OSError, ValueError, asyncio.IncompleteReadError):
                run.transport_errors += 1
                return
            run.record(i, status, body, time.perf_counter() - sent)

    return await _drive(run, conns, worker, start)


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    rate: float,
    connections: int = 64,
    seed: int = 0,
) -> Run:
    """Poisson arrivals at ``rate``/s for every request in ``requests``; latency is
    measured from each request's scheduled time.

    ``connections`` workers take the requests in schedule order; a worker that
    is ahead sleeps until the request is due, one that is behind sends at once
    (the wait stays on the clock). No task per request, so the client keeps up
    at several thousand requests per second. The summary's
    ``client_send_lag_p99_ms`` is the client's own lateness, which must stay small
    for the latencies to be the server's; ``send_late_p99_ms`` adds the waits for
    a free connection (a backlog at the server).
    """
    conns = await _open_all(host, port, connections)
    quiesce_gc()
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=len(requests))
    offsets = (np.cumsum(gaps) - gaps[0]).tolist()
    run = Run("open", 0.0, target_rps=rate)
    next_index = 0
    t0 = time.perf_counter() + 0.02
    clock = time.perf_counter

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(requests):
            i = next_index
            next_index += 1
            due = t0 + offsets[i]
            free = clock()  # this connection is free for request i from now
            if due - free > SPIN_S:
                await asyncio.sleep(due - free - SPIN_S)
            # The loop's timers fire up to ~1 ms late (millisecond resolution), a
            # lag that would count as the server's latency and, against a server
            # answering in ~1 ms, decide the p99: the last stretch is spent
            # yielding to the loop (answers keep being read) until the due time.
            while clock() < due:
                await asyncio.sleep(0)
            sent = clock()
            run.send_lag_s.append(max(0.0, sent - due))
            run.client_lag_s.append(max(0.0, sent - max(due, free)))
            start = min(due, sent)  # sent early: count from the send, never less
            try:
                status, body = await conn.request(requests[i])
            except (OSError, ValueError, asyncio.IncompleteReadError):
                run.transport_errors += 1
                conn.close()
                conn = await Connection.open(host, port)
                conns.append(conn)  # closed with the others at the end
                continue
            run.record(i, status, body, clock() - start)

    return await _drive(run, conns, worker, t0)


def quiesce_gc() -> None:
    """Collect now and turn the collector off until the load ends (``_drive``).

    A run keeps every answer (tens of thousands of objects), so collections grew
    with it and paused the sender, and an open loop counts such a pause as latency
    of the server being measured. The one collection happens before the clock
    starts: done inside the timed span, it made the first requests of an open-loop
    run late by its length (seen: a send-lag p99 of ~400 ms at 178 req/s, on a
    slow day). What survives is frozen, so the next run's collection skips it."""
    gc.collect()
    gc.freeze()
    gc.disable()


async def _drive(
    run: Run,
    conns: list[Connection],
    worker: Callable[[Connection], Awaitable[None]],
    started: float,
) -> Run:
    """One worker per connection until the requests run out; always closes them
    and turns the collector back on (``quiesce_gc`` turned it off)."""
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        run.seconds = time.perf_counter() - started
        for c in conns:
            c.close()
        gc.enable()
    return run
