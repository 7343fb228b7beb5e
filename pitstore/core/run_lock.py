"""One transform run at a time per home: an advisory lock on ``<home>/transform.lock``.

Both engines take the same lock: they write the same offline store, and a run
starts by removing every file no completed run published (``runs.py``), which
would include the files of a run in progress, whichever engine runs it.

``fcntl.flock`` belongs to the open file: the kernel releases it when the holder
exits, however it dies (SIGKILL included), so a stale lock file never blocks a
run. The file's content (holder's pid and start time) is only for the message.
A second run does not wait: it fails at once, and the scheduler decides.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pitstore.core.runs import StoreError

LOCK_NAME = "transform.lock"


class RunLocked(StoreError):
    """Another run holds the home's lock."""


def lock_path(home: Path) -> Path:
    return home / LOCK_NAME


@contextmanager
def run_lock(home: Path) -> Iterator[None]:
    """Hold the home's run lock for the block, or raise :class:`RunLocked`."""
    home.mkdir(parents=True, exist_ok=True)
    path = lock_path(home)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the run lock {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(holder_message(path)) from None
        # Ours now: record who holds it (truncate first, the last holder's text stays
        # otherwise; a reader that races us sees an empty file and says so).
        os.ftruncate(fd, 0)
        body = {"pid": os.getpid(), "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.pwrite(fd, (json.dumps(body) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def holder_message(path: Path) -> str:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return f"another run holds the lock since {body['since']}, pid {body['pid']} ({path})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"another run holds the lock (it is just starting) ({path})"
