"""``pitstore audit verify``: check every audit file's chain and signed checkpoints.

A file is *clean* when every line chains to the one before it (from the file's
genesis), every checkpoint in its ``.sig`` carries a valid HMAC and matches the
record it names, and no checkpoint counts more records than the file holds.
The first bad record of a file is named with its line number and what it
looks like (edited, deleted, reordered, inserted, forged, truncated). Records
after the last checkpoint of a file that was not closed are chained but not
signed: that is the loss nobody can detect (reported as a note, not a
failure). Across files, a process's files are numbered: a gap is a deleted
file, and a file followed by a later one must end with its closing checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pitstore.serving.audit_chain import CLOSING, genesis, sig_path, signature_valid, unlink

PART = re.compile(r"^part-(?P<stamp>[0-9TZ]+)-(?P<pid>\d+)-(?P<seq>\d+)\.jsonl$")


@dataclass
class Problem:
    kind: str  # edited | deleted | reordered | inserted | forged | truncated | unsigned
    line: int | None  # 1-based line of the first bad record in the file, if one
    message: str


@dataclass
class FileReport:
    file: str  # relative to the audit directory
    records: int = 0
    signed: int = 0  # records covered by a valid checkpoint
    closed: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Entry:
    line: int
    body: bytes
    prev: bytes
    hash: bytes


def _entries(path: Path, report: FileReport) -> list[_Entry] | None:
    """The chained lines; None (with a problem recorded) at a line that is not one."""
    entries: list[_Entry] = []
    torn: int | None = None
    for no, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        if raw == b"\n":
            continue  # padding
        parts = unlink(raw)
        if parts is None:
            if torn is None and not _is_json(raw):
                torn = no  # a line torn by a crash: fine if nothing chained follows
                continue
            report.problems.append(Problem("inserted", no, f"line {no} is not a chained record"))
            return None
        if torn is not None:
            report.problems.append(
                Problem("edited", torn, f"line {torn} is not a record, and records follow it")
            )
            return None
        entries.append(_Entry(no, *parts))
    if torn is not None:
        report.notes.append(f"line {torn} is a torn last line (a crash mid-write), skipped")
    return entries


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _chain(name: str, entries: list[_Entry]) -> Problem | None:
    """The first record that does not chain, described."""
    position = {e.hash: i for i, e in enumerate(entries)}
    expected = genesis(name)
    for i, e in enumerate(entries):
        if hashlib.sha256(e.prev + e.body).hexdigest().encode() != e.hash:
            message = f"line {e.line} was edited: it does not match its hash"
            return Problem("edited", e.line, message)
        if e.prev == expected:
            expected = e.hash
            continue
        k = position.get(e.prev)
        if k is not None and k > i:
            return Problem(
                "reordered",
                e.line,
                f"line {e.line} is out of order: it chains to line {entries[k].line}, after it",
            )
        if k is not None and k < i - 1:
            first = entries[k + 1].line
            last = entries[i - 1].line
            what = f"line {first} was" if k == i - 2 else f"lines {first}-{last} were"
            return Problem(
                "inserted",
                first,
                f"{what} inserted: line {e.line} chains to line {entries[k].line}",
            )
        if e.prev == genesis(name):
            return Problem(
                "inserted", entries[0].line, f"lines before line {e.line} were inserted or moved"
            )
        before = f"line {entries[i - 1].line}" if i else "the file's start"
        return Problem(
            "deleted",
            e.line,
            f"a record is missing before line {e.line} (it does not chain to {before}): "
            f"deleted, or {before} was rewritten",
        )
    return None


def _signatures(
    sig: Path, sigs: bytes | None, name: str, key: bytes, report: FileReport, entries: list[_Entry]
) -> None:
    if sigs is None:
        report.problems.append(
            Problem("unsigned", None, f"no checkpoint file {sig.name}: nothing here is signed")
        )
        return
    signed_after: int | None = None  # records of the last good checkpoint
    closed_at: int | None = None
    for k, raw in enumerate(sigs.splitlines(), 1):
        try:
            entry = json.loads(raw)
        except ValueError:
            report.notes.append(f"checkpoint line {k} is torn (a crash mid-write), skipped")
            continue
        where = f"checkpoint {k} of {sig.name}"
        if not signature_valid(key, entry) or entry["file"] != name:
            report.problems.append(
                Problem("forged", None, f"{where} fails its HMAC (forged, moved, or another key)")
            )
            return
        records, last = int(entry["records"]), str(entry["last"]).encode()
        if closed_at is not None:
            report.problems.append(Problem("forged", None, f"{where} follows the closing one"))
            return
        if records > len(entries):
            gone_after = entries[-1].line if entries else 0
            report.problems.append(
                Problem(
                    "truncated",
                    gone_after + 1,
                    f"truncated: {where} signs {records} records, the file holds "
                    f"{len(entries)} (the first missing record followed line {gone_after})",
                )
            )
            return
        actual = entries[records - 1].hash if records else genesis(name)
        if actual != last:
            start = entries[signed_after].line if signed_after is not None else 1
            report.problems.append(
                Problem(
                    "forged",
                    start,
                    f"records from line {start} on were rewritten: {where} signs "
                    f"record {records} with another hash",
                )
            )
            return
        signed_after = records
        if entry["reason"] in CLOSING:
            closed_at = records
    report.signed = signed_after or 0
    report.closed = closed_at is not None
    if closed_at is not None and len(entries) > closed_at:
        line = entries[closed_at].line
        report.problems.append(
            Problem("inserted", line, f"line {line} was added after the file was closed")
        )
    elif closed_at is None and len(entries) > report.signed:
        line = entries[report.signed].line
        report.notes.append(
            f"{len(entries) - report.signed} records from line {line} on are chained but not "
            "yet signed (the file is open, or its process stopped without closing it)"
        )


def verify_file(root: Path, path: Path, key: bytes) -> FileReport:
    name = path.relative_to(root).as_posix()
    report = FileReport(name)
    # The checkpoints first: a live log signs only records already in the file,
    # so the file read after them holds at least as many as they count.
    sig = sig_path(path)
    try:
        sigs: bytes | None = sig.read_bytes()
    except FileNotFoundError:
        sigs = None
    entries = _entries(path, report)
    if entries is None:
        return report
    report.records = len(entries)
    problem = _chain(name, entries)
    if problem is not None:
        report.problems.append(problem)
        return report
    _signatures(sig, sigs, name, key, report, entries)
    return report


def verify_tree(root: Path, key: bytes, day: str | None = None) -> list[FileReport]:
    """Every file's report, plus the files a process's numbering says are gone."""
    scope = f"day={day}" if day else "day=*"
    reports = [verify_file(root, p, key) for p in sorted(root.glob(f"{scope}/*.jsonl"))]
    for sig in sorted(root.glob(f"{scope}/*.sig")):
        if not sig.with_suffix(".jsonl").exists():
            name = sig.with_suffix(".jsonl").relative_to(root).as_posix()
            problem = Problem("deleted", None, f"deleted: {sig.name} remains, its log file is gone")
            reports.append(FileReport(name, problems=[problem]))
    by_process: dict[tuple[str, str], dict[int, FileReport]] = defaultdict(dict)
    for report in reports:
        match = PART.match(Path(report.file).name)
        if match:
            by_process[match["stamp"], match["pid"]][int(match["seq"])] = report
    for (stamp, pid), files in by_process.items():
        # A process numbers its files from 1; with --day, earlier ones may be on other days.
        first = min(files) if day else 1
        for seq in range(first, max(files)):
            if seq not in files:
                name = f"part-{stamp}-{pid}-{seq:04d}.jsonl"
                gone = Problem("deleted", None, f"deleted: {name} is gone")
                reports.append(FileReport(name, problems=[gone]))
            elif files[seq].ok and not files[seq].closed:
                files[seq].problems.append(
                    Problem(
                        "truncated",
                        None,
                        "truncated: a later file of the same process exists, but this one "
                        "lacks its closing checkpoint",
                    )
                )
    return sorted(reports, key=lambda r: r.file)
