"""Admission under a deadline: a request is scored in time, or refused at once.

At most ``limit`` requests are scored at once (see ``max_in_flight``); the
others wait in arrival order, each only as long as it can still be scored
within its own deadline. Why: with a plain semaphore a burst waited without
bound, so under 3x overload nearly every answer came late (14,003 of 15,000
over a 100 ms budget, server p50 191 ms): late answers for everyone, and a
queue that kept growing. Refusing early (503 + Retry-After, ~50 µs of CPU)
keeps the answers that *are* given within budget and leaves the caller time
to retry or fall back on its own rules.

"Can still be scored in time" needs the time a request takes once admitted:
``service_s``, a moving estimate of recent admitted-to-done times on their
upper side (mean + 2 mean deviations, as TCP estimates a round trip: one slow
request raises it a little, a slow spell a lot). A waiter is dropped when its deadline minus that
estimate passes; one that arrives when the wait ahead of it (the queue
length times the time a slot frees up) already exceeds its slack is refused
without waiting at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class Shed(Exception):
    """The request cannot be scored within its deadline."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Admission:
    def __init__(self, limit: int, initial_service_s: float = 0.005) -> None:
        self.limit = limit
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.service_s = initial_service_s  # admitted -> done, upper estimate
        self._mean_s = initial_service_s
        self._dev_s = 0.0

    def _expected_wait(self) -> float:
        # a slot frees every mean/limit seconds on average, and each waiter takes one
        return len(self.waiters) * self._mean_s / self.limit

    async def enter(self, deadline: float) -> float:
        """Wait for a slot until ``deadline`` (perf_counter) allows; the time
        admitted. Raises Shed when the request could not be scored in time."""
        now = time.perf_counter()
        slack = deadline - now - self.service_s
        if self.free > 0 and not self.waiters:
            if slack < 0:
                raise Shed("deadline")  # already too late (a slow body, a busy loop)
            self.free -= 1
            return now
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
        """Free a slot (to the oldest live waiter); ``admitted``: the time
        ``enter`` returned, to update the service-time estimate."""
        if admitted is not None:
            took = time.perf_counter() - admitted
            self._dev_s += (abs(took - self._mean_s) - self._dev_s) / 16
            self._mean_s += (took - self._mean_s) / 16
            self.service_s = self._mean_s + 2 * self._dev_s
        while self.waiters:
            slot = self.waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self.free += 1
