"""One decision per ``transaction_id``: a retry gets the first decision back.

A payment gateway retries a request whose answer it did not get (a timeout, a
reset connection). Scoring the retry anew made a second decision, with its
own id and possibly another outcome, for one transaction. Here the first
decision is the answer to every later request with the same
``transaction_id`` and the same body; the same id with a *different* body is
refused (409): two transactions must not share an id, and a gateway that
reuses one has a bug worth seeing.

What is remembered: ``transaction_id -> (decision_id, request fingerprint)``
for the last ``entries`` decisions, plus the full answer of the most recent
ones (an older one is read back from the audit log by its decision id). At
start-up the index is rebuilt from the audit log's records of the last
``window_s`` seconds, so a retry that crosses a restart is still a replay.
A request in flight is awaited by its retry, never scored twice.

Scope: one process. Several server processes on one audit directory would
each know only their own decisions (and those of earlier runs they read at
start-up); run one scoring process per audit directory, as the audit log's
own layout assumes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pitstore.serving.audit import find_decision, iter_records

log = logging.getLogger("pitstore.serving")
RECENT_ANSWERS = 4096  # full answers kept in memory (~2-3 KiB each)


class Conflict(Exception):
    """The transaction_id was scored before with a different request."""

    def __init__(self, transaction_id: str, decision_id: str) -> None:
        super().__init__(
            f"transaction_id {transaction_id!r} was already scored, with a different "
            f"request (decision {decision_id})"
        )
        self.decision_id = decision_id


def fingerprint(logged_request: dict[str, Any]) -> str:
    """Of the request as logged (card_id already a token)."""
    raw = json.dumps(logged_request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Replays:
    def __init__(self, audit_root: Path, entries: int) -> None:
        self.audit_root = audit_root
        self.entries = entries
        self.index: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.answers: OrderedDict[str, bytes] = OrderedDict()
        self.pending: dict[str, asyncio.Future[bytes | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.entries > 0

    def load(self, window_s: int, now: datetime) -> int:
        """Index the audit log's decisions of the last ``window_s``; how many."""
        if not self.enabled or window_s <= 0:
            return 0
        first = (now - timedelta(seconds=window_s)).astimezone(UTC).date()
        day, n = first, 0
        while day <= now.astimezone(UTC).date():
            for record in iter_records(self.audit_root, day.isoformat()):
                try:
                    tid, did = record["transaction_id"], record["decision_id"]
                    fp = fingerprint(record["request"])
                except (KeyError, TypeError):
                    continue  # not a decision record
                self._remember(tid, did, fp)
                n += 1
            day += timedelta(days=1)
        return n

    def _remember(self, tid: str, decision_id: str, fp: str) -> None:
        if tid in self.index:
            return  # the first decision stands
        self.index[tid] = (decision_id, fp)
        if len(self.index) > self.entries:
            old, _ = self.index.popitem(last=False)
            self.answers.pop(old, None)

    async def prior(self, tid: str, fp: str) -> bytes | None:
        """The first answer for ``tid``, or None if it is new (then ``claim`` it)."""
        while (waiting := self.pending.get(tid)) is not None:
            answer = await asyncio.shield(waiting)
            if answer is not None:
                self._check(tid, fp)
                return answer
            # the first attempt made no decision (shed, audit failure): try again
        known = self.index.get(tid)
        if known is None:
            return None
        self._check(tid, fp)
        answer = self.answers.get(tid)
        if answer is not None:
            return answer
        record = await asyncio.to_thread(find_decision, self.audit_root, known[0])
        if record is None:  # the log was pruned: nothing to replay
            log.warning("decision %s of a retried transaction is not in the audit log", known[0])
            return None
        # The logged line, as the first answer carried it (chain fields included).
        return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()

    def _check(self, tid: str, fp: str) -> None:
        decision_id, first_fp = self.index[tid]
        if first_fp != fp:
            raise Conflict(tid, decision_id)

    def claim(self, tid: str) -> None:
        self.pending[tid] = asyncio.get_running_loop().create_future()

    def settle(self, tid: str, done: tuple[str, str, bytes] | None) -> None:
        """The claimed request's outcome: (decision_id, fingerprint, answer), or None."""
        waiting = self.pending.pop(tid)
        if done is not None:
            decision_id, fp, answer = done
            self._remember(tid, decision_id, fp)
            self.answers[tid] = answer
            if len(self.answers) > RECENT_ANSWERS:
                self.answers.popitem(last=False)
        if not waiting.done():
            waiting.set_result(None if done is None else done[2])
