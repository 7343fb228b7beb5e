"""Micro-benchmarks of the audit log on this disk (``python -m bench.audit_micro DIR``).

1. prefill: one record per flush through the real ``AuditLog``, plain appends
   (``prefill_bytes=0``: each fdatasync also writes the file's new size) against
   prefilled padding (64 KiB ahead), interleaved record by record in one run so
   both see the same disk and the same neighbours. The figure is the log's own
   ``on_flush`` (write + fdatasync of one record).
2. chain: the CPU cost of chaining a record (``audit_chain.link``: one sha256
   over the record's bytes), per record; a served decision's record is ~3.4 KB.

DIR must be on the disk the audit log uses (the default ``data/audit`` is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pitstore.serving.audit import AuditLog, new_decision_id
from pitstore.serving.audit_chain import genesis, link

KEY = b"bench key, not a secret, 32 byte"


def _record(size: int) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"decision_id": new_decision_id(now), "decided_at": now.isoformat(), "pad": "x" * size}


def _quantiles(us: list[float]) -> dict[str, float]:
    us = sorted(us)
    return {
        "n": len(us),
        "mean_us": round(statistics.fmean(us), 1),
        "p50_us": round(us[len(us) // 2], 1),
        "p99_us": round(us[int(len(us) * 0.99)], 1),
        "over_1ms_pct": round(100 * sum(u > 1000 for u in us) / len(us), 2),
    }


def prefill(directory: Path, records: int, size: int) -> dict[str, dict[str, float]]:
    flushes: dict[str, list[float]] = {"append": [], "prefill": []}
    logs = {
        mode: AuditLog(
            directory / mode,
            key=KEY,
            prefill_bytes=0 if mode == "append" else 64 * 2**10,
            on_flush=lambda s, mode=mode: flushes[mode].append(s * 1e6),  # type: ignore[misc]
        )
        for mode in flushes
    }

    async def run() -> None:
        for i in range(records):
            for mode in ("append", "prefill") if i % 2 else ("prefill", "append"):
                await logs[mode].append_async(_record(size))
                await asyncio.sleep(0.001)  # the idle gap a request leaves: prefill runs here

    asyncio.run(run())
    for log in logs.values():
        log.close()
    out: dict[str, dict[str, float]] = {
        mode: _quantiles(us[10:])
        for mode, us in flushes.items()  # skip file creation
    }
    # Record i of each mode ran back to back: the ratio within a pair cancels the
    # load the neighbours put on the disk at that moment.
    pairs = zip(flushes["append"][10:], flushes["prefill"][10:], strict=True)
    ratios = sorted(p / a for a, p in pairs)
    out["paired"] = {"median_prefill_over_append": round(ratios[len(ratios) // 2], 3)}
    return out


def chain_cost(size: int, n: int = 2000, repeats: int = 7) -> float:
    """The fastest of ``repeats`` (the machine is shared: the minimum is the cost)."""
    data = json.dumps(_record(size), separators=(",", ":")).encode()
    prev = genesis("bench")
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            _, prev = link(data, prev)
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1500, help="bytes per record")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out = {
            "record_bytes": args.size,
            "prefill": prefill(Path(tmp), args.records, args.size),
            "chain_us_per_record": {s: round(chain_cost(s), 2) for s in (500, 1500, 3400)},
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
