"""Admission under a deadline: a request is scored in time, or refused at once.

Why: with a plain semaphore a burst waited without bound, so under 3x
overload nearly every answer came late (14,003 of 15,000 over a 100 ms
budget, server p50 191 ms): late answers for everyone, and a queue that kept
growing. Refusing early (503 + Retry-After, before the body is even parsed)
keeps the answers that *are* given within budget and leaves the caller time
to retry or apply its own rules.

Two bounds:

- **How many are scored at once** adapts to the box. Requests in flight share
  one event loop, so each takes longer the more there are: at 64 in flight on
  a VM that managed ~170 req/s (other load on it), an admitted request took
  ~360 ms (Little's law: 64 / 170 per s), though none had waited to get in.
  Every ``WINDOW`` completions the mean admitted-to-done time is compared with
  ``target_s`` (a share of the budget): above it, the limit shrinks in
  proportion (by a fifth at most: a single slow spell must not starve the
  server), well below it, it grows by one, up to ``max_limit``
  (``max_in_flight``), never below ``MIN_LIMIT``: a request that runs slow
  *alone* (the process descheduled on a busy host) is not slow because of the
  others, and a limit of 1 would then cap throughput at 1 / its time.
- **How long a request waits for a slot**: in arrival order, only while it can
  still be scored within its own deadline, given ``service_s`` (mean + 2 mean
  deviations of recent admitted-to-done times, as TCP estimates a round trip).
  One that arrives when the expected wait ahead of it (queue length x mean time
  / limit) already exceeds its slack is refused without waiting
  (``overloaded``, checked before the body is parsed: shedding must be cheap,
  or shedding itself eats the capacity).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

# The body of every shed answer (503 + Retry-After): a client (and the load bench)
# tells a deliberate refusal from a failure by it.
SHED_BODY = b'{"error":"overloaded: no decision was made","retry":true}'
WINDOW = 16  # completions per limit adjustment
MIN_LIMIT = 4


class Shed(Exception):
    """The request cannot be scored within its deadline."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Admission:
    def __init__(self, max_limit: int, target_s: float, initial_service_s: float = 0.005) -> None:
        self.max_limit = max_limit
        self.limit = float(max_limit)
        self.target_s = target_s
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.service_s = initial_service_s  # admitted -> done, upper estimate
        self._mean_s = initial_service_s
        self._dev_s = 0.0
        self._window_sum = 0.0
        self._window_n = 0

    def _has_slot(self) -> bool:
        return self.in_flight < max(1, int(self.limit))

    def _expected_wait(self) -> float:
        # a slot frees every mean/limit seconds on average, and each waiter takes one
        return (len(self.waiters) + 1) * self._mean_s / max(1.0, self.limit)

    def overloaded(self, deadline: float) -> bool:
        """Whether a request arriving now would be refused (cheap; no state change)."""
        if self._has_slot() and not self.waiters:
            return False
        slack = deadline - time.perf_counter() - self.service_s
        return slack <= self._expected_wait()

    async def enter(self, deadline: float) -> float:
        """Wait for a slot until ``deadline`` (perf_counter) allows; the time
        admitted. Raises Shed when the request could not be scored in time."""
        now = time.perf_counter()
        if self._has_slot() and not self.waiters:
            # Refused if it would finish late by the estimate; but never while
            # nothing is in flight: only admitted requests update the estimate,
            # so a stale (high) one must not refuse everything for good.
            late_by = self._mean_s if self.in_flight else 0.0
            if now + late_by >= deadline:
                raise Shed("deadline")  # a slow body, or a loop too busy to get here
            self.in_flight += 1
            return now
        slack = deadline - now - self.service_s
        if slack <= self._expected_wait():
            raise Shed("queue")
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(slot)
        try:
            async with asyncio.timeout(slack):
                await slot
        except TimeoutError:
            if slot.done() and not slot.cancelled():
                self.leave(None)  # handed a slot as the timer fired: pass it on
            raise Shed("deadline") from None
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.leave(None)
            raise
        return time.perf_counter()

    def leave(self, admitted: float | None) -> None:
        """Free a slot; ``admitted``: the time ``enter`` returned (None: a slot
        handed over but not used), to update the estimates."""
        self.in_flight -= 1
        if admitted is not None:
            self._observe(time.perf_counter() - admitted)
        while self.waiters and self._has_slot():
            slot = self.waiters.popleft()
            if not slot.done():
                self.in_flight += 1  # the slot passes to the waiter
                slot.set_result(None)

    def _observe(self, took: float) -> None:
        self._dev_s += (abs(took - self._mean_s) - self._dev_s) / 16
        self._mean_s += (took - self._mean_s) / 16
        self.service_s = self._mean_s + 2 * self._dev_s
        self._window_sum += took
        self._window_n += 1
        if self._window_n < WINDOW:
            return
        mean = self._window_sum / self._window_n
        self._window_sum, self._window_n = 0.0, 0
        if mean > self.target_s:
            floor = float(min(MIN_LIMIT, self.max_limit))
            self.limit = max(floor, self.limit * max(0.8, self.target_s / mean))
        elif mean < 0.8 * self.target_s:
            self.limit = min(float(self.max_limit), self.limit + 1)


class LoopLag:
    """How late the event loop runs a timer, recently (seconds; a moving average).

    Why: a request's clock starts when the app first sees it, but the bytes
    arrived earlier, by about as long as the loop was busy elsewhere (or the
    process descheduled): the same delay a timer sees. Starting the clock that
    much earlier (``serving.guard``) makes a lagging server shed sooner,
    which is what gives the loop its time back."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.value = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        clock = time.perf_counter
        while True:
            before = clock()
            await asyncio.sleep(self.interval_s)
            late = max(0.0, clock() - before - self.interval_s)
            self.value += (late - self.value) / 4

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
