"""The decision audit log: append-only JSON lines, made durable before the response.

Layout::

    <audit_dir>/day=YYYY-MM-DD/part-<start stamp>-<pid>-<seq>.jsonl   the records
    <audit_dir>/day=YYYY-MM-DD/part-<start stamp>-<pid>-<seq>.sig     its checkpoints

One record per line; the records appended in one event-loop iteration are
written with a single ``pwrite`` at the end of the data, and made durable with
``fdatasync`` before ``append`` (or ``append_async``) returns; the caller
sends the response only after that. Concurrent appends share one fdatasync
(group commit).

Evidence (``audit_chain``, docs/audit.md): each line carries ``prev`` and
``hash`` (a sha256 chain per file), and the ``.sig`` sidecar holds HMAC-signed
checkpoints (file, record count, last hash): when a file opens, every
``checkpoint_records`` records or ``checkpoint_seconds``, and when it rotates
or closes. A checkpoint is written only after the records it covers are
durable. ``pitstore audit verify`` checks both.

Files are *prefilled* (``audit_prefill``): a background thread writes newline
padding ahead of the data (``prefill_bytes`` at a time), so most records
overwrite padding whose size is already on disk, and their fdatasync flushes
the data alone. Why: an append changes the file's size, so each append's flush
also wrote the inode (docs/decisions/0005-audit-prefill.md). The padding
reads as blank lines, which every reader here and DuckDB's ``read_json``
skip; a file is cut back to its data when it is closed, so only a crashed
process's file ends in blank lines (at most ``prefill_bytes`` of them).

A failed write or fdatasync fails every request waiting on it (a 503, "no
decision"); the log stays on its file (the next write starts where the failed
one did, and bytes a short write left are overwritten with padding), reports
itself unhealthy (``healthy()``, ``last_error``) and is healthy again once a
write and its flush succeed. Whole lines written before a failed flush stay:
the log may hold a record that was never answered, never an answer without
its record. A process never appends to another process's (or an earlier
run's) file. Files rotate at the UTC day and at a size limit. Query with
DuckDB::

    select decision, count(*) from read_json('<audit_dir>/day=*/*.jsonl',
        format='newline_delimited', ignore_errors=true) group by all;

Decision ids start with the UTC day (``YYYYMMDD-<hex>``), so a lookup reads one
day's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pitstore.serving.audit_chain import (
    SUFFIX_LEN,
    body,
    genesis,
    key_file,
    link,
    load_key,
    sig_path,
    signature_line,
)
from pitstore.serving.audit_prefill import Prefill
from pitstore.serving.audit_read import (
    count_records,
    find_decision,
    iter_records,
    locate_decision,
)

log = logging.getLogger("pitstore.serving")
# The readers live in audit_read; every caller imports them from here.
__all__ = [
    "AuditError",
    "AuditLog",
    "count_records",
    "find_decision",
    "iter_records",
    "locate_decision",
    "new_decision_id",
]


class AuditError(RuntimeError):
    """The audit log could not be written: the decision must not be returned."""


@dataclass
class _Queued:
    """The records appended in one event-loop iteration, written together."""

    durable: asyncio.Future[None]
    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # as written, chained


class _Head(NamedTuple):
    """The chain's state, replaced whole (one assignment) after each write."""

    written: int  # records written by this log, all files
    records: int  # records in the current file
    last: bytes  # the current file's last hash


def _failed(exc: OSError) -> AuditError:
    return AuditError(f"audit log write failed: {exc}")


def _day(record: dict[str, Any]) -> str:
    """The UTC day of the file a record goes to (``decided_at`` is ISO, UTC)."""
    return str(record["decided_at"])[:10]


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # every waiter may have been cancelled: not "never retrieved"


def new_decision_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%d}-{uuid.uuid4().hex}"


class AuditLog:
    def __init__(
        self,
        root: Path,
        rotate_bytes: int = 64 * 2**20,
        on_flush: Callable[[float], None] | None = None,
        prefill_bytes: int = 64 * 2**10,
        key: bytes | None = None,
        checkpoint_records: int = 1000,
        checkpoint_seconds: float = 1.0,
    ) -> None:
        self.root = root
        # The HMAC key; by default <root>/../audit.key, which is <home>/audit.key
        # for the default audit_dir (``audit_key`` resolves it from settings).
        self.key = key if key is not None else load_key(key_file(root.parent), create=True)
        self.on_flush = on_flush  # seconds per group write + fsync (a metric)
        self.rotate_bytes = rotate_bytes
        self.checkpoint_records = checkpoint_records
        self.checkpoint_seconds = checkpoint_seconds
        self._stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._lock = threading.Lock()  # guards the file and the chain
        self._sync_lock = threading.Lock()  # one fsync at a time, covering all writes
        self._fd: int | None = None
        self._sig_fd: int | None = None
        self._name = ""  # the current file, relative to root
        self._day: str | None = None
        self._seq = 0
        self._size = 0
        self._dirty_end = 0  # a failed write's bytes reach here: pad over them
        self._head = _Head(0, 0, b"")
        self._synced = 0
        self._signed = 0  # records of the current file covered by a checkpoint
        self._signed_at = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._error: str | None = None
        self._prefill = Prefill(prefill_bytes, rotate_bytes)
        self._queued: _Queued | None = None  # records of this loop iteration, not yet written
        self.records = 0

    # --- health ----------------------------------------------------------------

    def healthy(self) -> bool:
        """False from a failed write or flush until a write and its flush succeed."""
        return self._error is None

    @property
    def last_error(self) -> str | None:
        """The failure that made the log unhealthy (None while healthy)."""
        return self._error

    # --- writing -------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> bytes:
        """Write one whole record and fsync it; raise AuditError if that fails.

        Returns the JSON line written (chained), so the response can reuse it
        rather than encode the same record a second time."""
        data = body(record)  # serialise fully first: no partial record on bad data
        seq, lines = self._write_lines([(_day(record), data)])
        try:
            self._sync(seq)
        except OSError as exc:
            raise self._fail(exc) from exc
        self.records += 1
        return lines[0]

    async def append_async(self, record: dict[str, Any]) -> bytes:
        """``append`` for an event loop: the record is durable when this returns.

        The records appended in one loop iteration are written with one
        ``write`` and made durable with one ``fdatasync`` (group commit), on
        the next iteration, on the loop itself. Why batches: an fsync per
        request on the event loop was ~15% of a request's loop time (0.2-2 ms
        each) and stalled every other request meanwhile. Why on the loop: a
        flush on a thread of its own cost more CPU in hand-offs than the flush
        on a 2-core VM (1.35 ms against 0.51 ms per flush, measured)."""
        data = body(record)  # serialise first: bad data fails this request alone
        loop = asyncio.get_running_loop()
        batch = self._queued
        if batch is None:
            batch = self._queued = _Queued(loop.create_future())
            batch.durable.add_done_callback(_retrieve)  # all waiters may have gone
            loop.call_soon(self._write_queued)
        index = len(batch.bodies)
        batch.bodies.append((_day(record), data))
        # shield: a cancelled request must not cancel the write others await
        await asyncio.shield(batch.durable)
        self.records += 1
        return batch.lines[index]

    def _write_queued(self) -> None:
        batch, self._queued = self._queued, None
        assert batch is not None
        started = time.perf_counter()
        try:
            seq, batch.lines = self._write_lines(batch.bodies)
            self._sync(seq)
        except AuditError as exc:
            batch.durable.set_exception(exc)
            return
        except OSError as exc:
            batch.durable.set_exception(self._fail(exc))
        else:
            batch.durable.set_result(None)
        if self.on_flush is not None:
            self.on_flush(time.perf_counter() - started)
        self._schedule_checkpoint()

    def _fail(self, exc: OSError) -> AuditError:
        self._error = str(exc)
        return _failed(exc)

    def _write_lines(self, bodies: list[tuple[str, bytes]]) -> tuple[int, list[bytes]]:
        """Chain and append ``(day, body)``s in order, a ``write`` per run of lines
        that share a file; the sequence number of the last one (for _sync) and
        the lines as written."""
        out: list[bytes] = []
        try:
            with self._lock:
                i = 0
                while i < len(bodies):
                    day = bodies[i][0]
                    self._ensure_file(day, len(bodies[i][1]) + SUFFIX_LEN)
                    head = self._head
                    room, prev, j, size = self.rotate_bytes - self._size, head.last, i, 0
                    chunk: list[bytes] = []
                    while j < len(bodies) and bodies[j][0] == day:
                        line, digest = link(bodies[j][1], prev)
                        if chunk and size + len(line) > room:
                            break
                        chunk.append(line)
                        size += len(line)
                        prev = digest
                        j += 1
                    self._write_chunk(chunk[0] if len(chunk) == 1 else b"".join(chunk))
                    n = len(chunk)  # the chain moves on only once the write succeeded
                    self._head = _Head(head.written + n, head.records + n, prev)
                    out.extend(chunk)
                    i = j
                return self._head.written, out
        except OSError as exc:
            raise self._fail(exc) from exc

    def _write_chunk(self, chunk: bytes) -> None:
        assert self._fd is not None
        end = self._size + len(chunk)
        if self._dirty_end > end:  # a failed write left bytes past this one: pad them
            chunk += b"\n" * (self._dirty_end - end)
        self._prefill.before_write(self._size + len(chunk))
        n = os.pwrite(self._fd, chunk, self._size)
        if n != len(chunk):
            # Stay on this file: the next write starts at the same offset; until
            # then the torn bytes become padding (best effort: they are already
            # allocated, so this rarely fails where the write did).
            self._dirty_end = max(self._dirty_end, self._size + n)
            with contextlib.suppress(OSError):
                if os.pwrite(self._fd, b"\n" * n, self._size) == n:
                    self._dirty_end = self._size
            raise OSError(f"short write to the audit log ({n} of {len(chunk)} bytes)")
        self._dirty_end = 0
        self._size = end
        self._prefill.ahead(self._fd, end)

    def _sync(self, seq: int) -> None:
        head = self._head  # every record it counts was written before the flush below
        with self._sync_lock:
            if self._synced >= seq:
                return  # another thread's fsync already covered this record
            if self._fd is not None:
                os.fdatasync(self._fd)
            self._synced = max(self._synced, head.written)
            self._error = None
            unsigned = head.records - self._signed
            if unsigned >= self.checkpoint_records or (
                unsigned and time.monotonic() - self._signed_at >= self.checkpoint_seconds
            ):
                self._checkpoint(head, "periodic")

    # --- checkpoints -------------------------------------------------------------

    def _checkpoint(self, head: _Head, reason: str) -> None:
        """Sign ``head`` (durable records only) into the ``.sig``; never fails a
        record: a missed checkpoint leaves more records unsigned until the next."""
        if self._sig_fd is None or head.written > self._synced:
            return
        line = signature_line(self.key, self._name, head.records, head.last, reason)
        try:
            os.write(self._sig_fd, line)
        except OSError as exc:
            log.warning("audit checkpoint not written (%s); the next one covers these", exc)
            return
        self._signed, self._signed_at = head.records, time.monotonic()

    def _schedule_checkpoint(self) -> None:
        """Sign unsigned records within ``checkpoint_seconds`` even if none follow."""
        loop = asyncio.get_running_loop()
        # a timer of a loop that has since closed never fires: schedule anew
        pending = self._timer is not None and self._timer_loop is loop
        if not pending and self._head.records > self._signed:
            self._timer_loop = loop
            self._timer = loop.call_later(self.checkpoint_seconds, self._timed_checkpoint)

    def _timed_checkpoint(self) -> None:
        self._timer = None
        with self._sync_lock:
            head = self._head
            if head.records > self._signed:
                self._checkpoint(head, "periodic")

    def checkpoint(self) -> None:
        """Sign every durable record now (a checkpoint outside the schedule)."""
        with self._lock, self._sync_lock:
            self._checkpoint(self._head, "periodic")

    # --- files ---------------------------------------------------------------------

    def _ensure_file(self, day: str, incoming: int) -> None:
        if self._fd is not None and self._day == day and self._size + incoming <= self.rotate_bytes:
            return
        with self._sync_lock:  # lock order: _lock then _sync_lock (never the reverse)
            if self._fd is not None:
                self._close_file("rotate")
            directory = self.root / f"day={day}"
            directory.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            path = directory / f"part-{self._stamp}-{os.getpid()}-{self._seq:04d}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            self._name = f"day={day}/{path.name}"
            self._day, self._size, self._dirty_end = day, 0, 0
            self._prefill.new_file()
            self._head = _Head(self._head.written, 0, genesis(self._name))
            self._signed = 0
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            self._sig_fd = os.open(sig_path(path), flags, 0o640)
            os.write(self._sig_fd, signature_line(self.key, self._name, 0, self._head.last, "open"))
            os.fsync(self._sig_fd)  # a file with no signature at all is a failed check
            dir_fd = os.open(directory, os.O_RDONLY)  # make the new files' names durable
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _close_file(self, reason: str) -> None:
        """Cut the padding off (a closed file holds its data alone), sync, sign, close."""
        assert self._fd is not None
        self._prefill.wait()
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
            self._synced = self._head.written
            self._checkpoint(self._head, reason)
            if self._sig_fd is not None:
                os.fsync(self._sig_fd)
        finally:
            os.close(self._fd)
            if self._sig_fd is not None:
                os.close(self._sig_fd)
            self._fd = self._sig_fd = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock, self._sync_lock:
            if self._fd is not None:
                self._close_file("close")
        self._prefill.shutdown()
