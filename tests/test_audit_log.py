"""The decision audit log: group commit on an event loop, durability, failures."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from serving.audit import AuditError, AuditLog, count_records, find_decision, new_decision_id


def record(i: int) -> dict[str, Any]:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return {"decision_id": new_decision_id(now), "decided_at": now.isoformat(), "n": i}


class CountingFsync:
    """Counts real fsyncs (and can make them fail) without replacing them."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail:
            raise OSError(5, "Input/output error")
        self.real(fd)


# Both ways of running the fsync: on the event loop (the default) and on the log's thread.
BOTH = pytest.mark.parametrize("on_thread", [False, True], ids=["inline", "thread"])


@BOTH
def test_concurrent_appends_share_fsyncs_and_all_are_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_thread: bool
) -> None:
    log = AuditLog(tmp_path, fsync_on_thread=on_thread)
    log.append(record(-1))  # opens the file (its own fsyncs are not counted)
    fsync = CountingFsync()
    monkeypatch.setattr(os, "fsync", fsync)

    async def burst() -> list[bytes]:
        return list(await asyncio.gather(*(log.append_async(record(i)) for i in range(200))))

    lines = asyncio.run(burst())
    # 200 requests finishing together share a few fsyncs (the first may start
    # before the others have written; every later one covers all written so far).
    assert 1 <= fsync.calls <= 5, fsync.calls
    assert log._synced == log._written == 201
    log.close()
    assert count_records(tmp_path) == 201 == log.records
    first = lines[0].decode()
    assert find_decision(tmp_path, first.split('"decision_id":"')[1].split('"')[0]) is not None


@BOTH
def test_sequential_appends_are_each_durable_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_thread: bool
) -> None:
    log = AuditLog(tmp_path, fsync_on_thread=on_thread)

    async def one_by_one() -> None:
        for i in range(5):
            await log.append_async(record(i))
            # durable when append_async returns: nothing written is unsynced
            assert log._synced == log._written

    asyncio.run(one_by_one())
    log.close()
    assert count_records(tmp_path) == 5


@BOTH
def test_failed_fsync_fails_every_waiter_and_the_next_flush_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_thread: bool
) -> None:
    log = AuditLog(tmp_path, fsync_on_thread=on_thread)
    log.append(record(-1))
    fsync = CountingFsync(fail=True)
    monkeypatch.setattr(os, "fsync", fsync)

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
    assert log._synced == log._written
    log.close()


def test_one_iterations_records_share_a_write_and_respect_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, rotate_bytes=1000)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)

    async def burst() -> list[bytes]:
        return list(await asyncio.gather(*(log.append_async(record(i)) for i in range(40))))

    lines = asyncio.run(burst())
    log.close()
    line_size = len(lines[0])
    files = sorted(tmp_path.glob("day=*/*.jsonl"))
    assert count_records(tmp_path) == 40 == log.records
    assert len(writes) == len(files) >= 40 * line_size // 1000  # a write per file, not per line
    assert all(f.stat().st_size <= 1000 for f in files)


def test_a_short_write_fails_its_batch_and_the_next_record_starts_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path)
    log.append(record(-1))
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))

    async def burst(n: int) -> list[Any]:
        return list(
            await asyncio.gather(
                *(log.append_async(record(i)) for i in range(n)), return_exceptions=True
            )
        )

    assert all(isinstance(r, AuditError) for r in asyncio.run(burst(4)))
    monkeypatch.setattr(os, "write", real_write)
    assert all(isinstance(r, bytes) for r in asyncio.run(burst(2)))
    log.close()
    assert len(list(tmp_path.glob("day=*/*.jsonl"))) == 2  # the torn line ends the first file
    # The first, the two whole lines before the tear (their requests were told
    # "no decision": the log may hold more than was answered, never less) and the
    # last two; the torn line is skipped.
    assert count_records(tmp_path) == 5
