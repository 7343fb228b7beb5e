"""A real write failure (the file size limit, EFBIG) in a child process: the log
stays on its one file, says it is unhealthy, and recovers when writes succeed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pitstore.serving.audit import count_records
from pitstore.serving.audit_verify import verify_tree

KEY = b"an audit key for the tests, 32b!"

CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from pitstore.serving.audit import AuditError, AuditLog, new_decision_id

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    def record(i):
        return {"decision_id": new_decision_id(now), "decided_at": now.isoformat(), "n": i}

    log = AuditLog(Path(sys.argv[1]), key=sys.argv[2].encode(), prefill_bytes=4096)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    ok, failed, errors, health = 0, 0, set(), []

    async def burst(n, start):
        return await asyncio.gather(
            *(log.append_async(record(start + i)) for i in range(n)), return_exceptions=True
        )

    for b in range(40):  # ~200 bytes a record: the limit falls within the first ~80
        for r in asyncio.run(burst(5, b * 5)):
            if isinstance(r, AuditError):
                failed += 1
                errors.add(str(r))
            else:
                ok += 1
        health.append(log.healthy())
    unhealthy = (log.healthy(), log.last_error)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
    after = [isinstance(r, bytes) for r in asyncio.run(burst(5, 1000))]
    print(json.dumps({
        "ok": ok, "failed": failed, "errors": sorted(errors), "unhealthy": unhealthy,
        "after": after, "healthy_after": log.healthy(), "error_after": log.last_error,
    }))
    log.close()
    """
)


def test_writes_past_the_size_limit_fail_on_one_file_and_recover(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), KEY.decode()],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["ok"] >= 40 and result["failed"] >= 40, result
    # a write across the limit is cut short at it; one that starts past it gets EFBIG
    failures = ("short write to the audit log", "File too large")
    assert all(any(f in e for f in failures) for e in result["errors"]), result["errors"]
    assert result["unhealthy"][0] is False and any(f in result["unhealthy"][1] for f in failures)
    assert all(result["after"]) and result["healthy_after"] and result["error_after"] is None
    # 40 failed flushes, one file (it used to open a new file per failure)
    assert len(list(tmp_path.glob("day=*/*.jsonl"))) == 1
    assert count_records(tmp_path) == result["ok"] + 5  # nothing half-written stays
    (report,) = verify_tree(tmp_path, KEY)
    assert report.ok and report.closed, report
