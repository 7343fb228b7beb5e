"""Newline padding written ahead of an audit file's data (docs/decisions/0005).

An append changes a file's size, so its ``fdatasync`` writes the inode too;
records that overwrite padding already on disk flush their data alone. The
padding is written on the log's own thread at idle priority, so it runs while
the event loop waits, and never where a record is being written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("pitstore.serving")


def _idle_priority() -> None:
    """The prefill thread runs at idle priority: only while the loop waits."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class Prefill:
    """Pads one file at a time, ``size`` bytes ahead of its data, up to ``limit``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = min(size, limit)  # 0: plain appends
        self.limit = limit
        self.end = 0  # the current file's padding ends here
        self._pending: Future[None] | None = None  # padding [_from, ...) in progress
        self._from = 0
        self._padding = b"\n" * self.size
        self._thread = ThreadPoolExecutor(
            1, thread_name_prefix="audit-prefill", initializer=_idle_priority
        )

    def new_file(self) -> None:
        self.wait()
        self.end = 0

    def before_write(self, end: int) -> None:
        """Wait if a write up to ``end`` would land where padding is being written
        (a burst that outran the padding)."""
        pending = self._pending
        if pending is not None and not pending.done() and end > self._from:
            self.wait()

    def ahead(self, fd: int, data_end: int) -> None:
        """Start padding the next ``size`` bytes once half the padding is used."""
        pending = self._pending
        if not self.size or (pending is not None and not pending.done()):
            return
        if self.end - data_end > self.size // 2:
            return
        start = max(self.end, data_end)
        stop = min(start + self.size, self.limit)
        if stop > start:
            self._from = start
            self._pending = self._thread.submit(self._pad, fd, start, stop)

    def _pad(self, fd: int, start: int, stop: int) -> None:
        """Pad ``[start, stop)`` with newlines.

        Not flushed here: the next record's fdatasync writes the padding and the
        new size once, then many records' flushes find neither. A flush of its
        own on this thread was measured worse: a record's fdatasync waits for
        every page of the file under writeback, so it often waited for that one
        (1.4% of flushes took 5-25 ms)."""
        try:
            # a short write pads less: records past it append, contiguous as ever
            pad = memoryview(self._padding)[: stop - start]
            self.end = start + os.pwrite(fd, pad, start)
        except Exception as exc:  # noqa: BLE001  records still append past it, only slower
            # (never raised: a writer waiting on this must not fail for padding)
            log.warning("audit log prefill failed (%s); appending without it", exc)

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True)
