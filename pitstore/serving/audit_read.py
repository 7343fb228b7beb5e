"""Reading the audit log: every record, or one decision by id (one day's files).

Padding (blank lines) and a line torn by a crash are skipped. These readers do
not verify the chain: ``audit_verify`` does (``pitstore audit verify``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DECISION_ID = re.compile(r"^(\d{8})-[0-9a-f]{32}$")


def iter_records(root: Path, day: str | None = None) -> Iterator[dict[str, Any]]:
    """Every whole record (a torn last line of a crashed file is skipped)."""
    pattern = f"day={day}/*.jsonl" if day else "day=*/*.jsonl"
    for path in sorted(root.glob(pattern)):
        with path.open("rb") as fh:
            for raw in fh:
                if raw == b"\n" or not raw.endswith(b"\n"):  # padding, or a torn last line
                    continue
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue


def locate_decision(root: Path, decision_id: str) -> tuple[Path, dict[str, Any]] | None:
    """The file holding a decision, and its record."""
    match = DECISION_ID.match(decision_id)
    if not match:
        return None
    d = match.group(1)
    day = f"{d[:4]}-{d[4:6]}-{d[6:]}"
    needle = f'"decision_id":"{decision_id}"'.encode()
    for path in sorted((root / f"day={day}").glob("*.jsonl")):
        with path.open("rb") as fh:
            for raw in fh:
                if needle in raw and raw.endswith(b"\n"):
                    try:
                        return path, json.loads(raw)
                    except ValueError:  # torn by a crash (then padded): not a record
                        continue
    return None


def find_decision(root: Path, decision_id: str) -> dict[str, Any] | None:
    found = locate_decision(root, decision_id)
    return found[1] if found else None


def count_records(root: Path) -> int:
    return sum(1 for _ in iter_records(root))
