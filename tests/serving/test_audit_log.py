"""The decision audit log: group commit on an event loop, durability, failures."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pitstore.serving.audit import (
    AuditError,
    AuditLog,
    count_records,
    find_decision,
    new_decision_id,
)
from pitstore.serving.audit_verify import verify_tree


def record(i: int) -> dict[str, Any]:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return {"decision_id": new_decision_id(now), "decided_at": now.isoformat(), "n": i}


class CountingFsync:
    """Counts the records' real fdatasyncs (and can make them fail) without
    replacing them; the prefill thread's own flushes are not counted."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.real = os.fdatasync

    def __call__(self, fd: int) -> None:
        if threading.current_thread().name.startswith("audit-prefill"):
            self.real(fd)
            return
        self.calls += 1
        if self.fail:
            raise OSError(5, "Input/output error")
        self.real(fd)


KEY = b"0123456789abcdef0123456789abcdef"  # the HMAC key of every log here


def test_concurrent_appends_share_fsyncs_and_all_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, key=KEY)
    log.append(record(-1))  # opens the file (its own fsyncs are not counted)
    fsync = CountingFsync()
    monkeypatch.setattr(os, "fdatasync", fsync)

    async def burst() -> list[bytes]:
        return list(await asyncio.gather(*(log.append_async(record(i)) for i in range(200))))

    lines = asyncio.run(burst())
    # 200 requests finishing together share a few fsyncs (the first may start
    # before the others have written; every later one covers all written so far).
    assert 1 <= fsync.calls <= 5, fsync.calls
    assert log._synced == log._head.written == 201
    log.close()
    assert count_records(tmp_path) == 201 == log.records
    first = lines[0].decode()
    assert find_decision(tmp_path, first.split('"decision_id":"')[1].split('"')[0]) is not None


def test_sequential_appends_are_each_durable_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, key=KEY)

    async def one_by_one() -> None:
        for i in range(5):
            await log.append_async(record(i))
            # durable when append_async returns: nothing written is unsynced
            assert log._synced == log._head.written

    asyncio.run(one_by_one())
    log.close()
    assert count_records(tmp_path) == 5


def test_failed_fsync_fails_every_waiter_and_the_next_flush_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, key=KEY)
    log.append(record(-1))
    fsync = CountingFsync(fail=True)
    monkeypatch.setattr(os, "fdatasync", fsync)

    async def burst(n: int) -> list[Any]:
        return list(
            await asyncio.gather(
                *(log.append_async(record(i)) for i in range(n)), return_exceptions=True
            )
        )

    results = asyncio.run(burst(10))
    assert all(isinstance(r, AuditError) for r in results), results
    assert "Input/output error" in str(results[0])
    assert log.records == 1  # no decision counted as logged
    fsync.fail = False  # the disk recovers: the next flush covers the earlier lines too
    assert all(isinstance(r, bytes) for r in asyncio.run(burst(3)))
    assert log._synced == log._head.written
    log.close()


def test_one_iterations_records_share_a_write_and_respect_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, rotate_bytes=1000, key=KEY)
    writes: list[int] = []
    real_write = os.pwrite

    def counting_write(fd: int, data: bytes, offset: int) -> int:
        if not threading.current_thread().name.startswith("audit-prefill"):
            writes.append(len(data))
        return real_write(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_write)

    async def burst() -> list[bytes]:
        return list(await asyncio.gather(*(log.append_async(record(i)) for i in range(40))))

    lines = asyncio.run(burst())
    log.close()
    line_size = len(lines[0])
    files = sorted(tmp_path.glob("day=*/*.jsonl"))
    assert count_records(tmp_path) == 40 == log.records
    assert len(writes) == len(files) >= 40 * line_size // 1000  # a write per file, not per line
    assert all(f.stat().st_size <= 1000 for f in files)


def test_a_short_write_fails_its_batch_and_the_log_stays_on_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, prefill_bytes=0, key=KEY)  # the tear is the file's end
    log.append(record(-1))
    real_write = os.pwrite
    monkeypatch.setattr(
        os, "pwrite", lambda fd, data, at: real_write(fd, data[: len(data) // 2], at)
    )

    async def burst(n: int) -> list[Any]:
        return list(
            await asyncio.gather(
                *(log.append_async(record(i)) for i in range(n)), return_exceptions=True
            )
        )

    assert all(isinstance(r, AuditError) for r in asyncio.run(burst(4)))
    assert not log.healthy() and "short write" in str(log.last_error)
    monkeypatch.setattr(os, "pwrite", real_write)
    assert all(isinstance(r, bytes) for r in asyncio.run(burst(2)))
    assert log.healthy() and log.last_error is None
    log.close()
    # One file: the next write started where the failed one did, so the lines
    # the short write left (their requests were told "no decision") are gone.
    assert len(list(tmp_path.glob("day=*/*.jsonl"))) == 1
    assert count_records(tmp_path) == 3
    (report,) = verify_tree(tmp_path, KEY)
    assert report.ok and report.closed and report.records == 3, report


def test_a_torn_line_followed_by_padding_is_skipped_by_every_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, prefill_bytes=4096, key=KEY)
    first = log.append(record(0))
    real_write = os.pwrite
    monkeypatch.setattr(
        os, "pwrite", lambda fd, data, at: real_write(fd, data[: len(data) // 2], at)
    )
    torn = record(1)
    with pytest.raises(AuditError, match="short write"):
        log.append(torn)
    monkeypatch.setattr(os, "pwrite", real_write)
    log.append(record(2))
    log.close()
    assert count_records(tmp_path) == 2
    assert find_decision(tmp_path, torn["decision_id"]) is None  # its half line is not JSON
    assert find_decision(tmp_path, json.loads(first)["decision_id"]) is not None


def test_files_are_padded_ahead_while_open_and_cut_to_their_data_on_close(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path, prefill_bytes=64 * 2**10, key=KEY)
    lines = [log.append(record(i)) for i in range(3)]
    log._prefill.wait()
    (path,) = tmp_path.glob("day=*/*.jsonl")
    data = b"".join(lines)
    content = path.read_bytes()
    # padded from the end of the first record on (it started the padding)
    assert len(content) == len(lines[0]) + 64 * 2**10 == os.stat(path).st_size
    assert content.startswith(data) and set(content[len(data) :]) == {ord("\n")}
    # a process killed now leaves a padded file: every reader, DuckDB too, sees 3 records
    assert count_records(tmp_path) == 3
    rows = duckdb.sql(
        f"select n from read_json('{path}', format='newline_delimited') order by n"
    ).fetchall()
    assert rows == [(0,), (1,), (2,)]
    log.close()
    assert path.read_bytes() == data  # closed: the data alone


def test_a_burst_past_the_padding_waits_for_it_and_loses_nothing(tmp_path: Path) -> None:
    """Records written while the thread pads ahead never land where it writes."""
    log = AuditLog(tmp_path, prefill_bytes=2048, key=KEY)  # smaller than a burst's write

    async def bursts() -> None:
        for b in range(30):
            await asyncio.gather(*(log.append_async(record(b * 10 + i)) for i in range(10)))

    asyncio.run(bursts())
    log.close()
    seen = [
        json.loads(line)["n"]
        for f in sorted(tmp_path.glob("day=*/*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]
    assert seen == list(range(300))  # every record whole, in order, no blank line left


def test_a_failed_prefill_costs_nothing_but_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = os.pwrite

    def no_room_for_padding(fd: int, data: bytes, offset: int) -> int:
        if threading.current_thread().name.startswith("audit-prefill"):
            raise OSError(28, "No space left on device")
        return real_write(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", no_room_for_padding)
    log = AuditLog(tmp_path, prefill_bytes=4096, key=KEY)

    async def some() -> None:
        for i in range(20):
            await log.append_async(record(i))

    asyncio.run(some())
    log.close()
    assert count_records(tmp_path) == 20 == log.records
    assert "prefill failed" in caplog.text and "No space left" in caplog.text
