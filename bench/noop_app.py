"""Benchmark #3's yardstick and reference: a FastAPI endpoint that does no scoring.

Same framework, same uvicorn settings (host, log level, one process), same
request body as pitstore.

With ``--durable-audit DIR`` it is #3's yardstick: before it answers it appends
a record of the request to pitstore's own audit log (``serving.audit.AuditLog``:
group commit, fsync), what every pitstore decision must do. pitstore is judged
against it (``bench/score_verdict.py``), so the ratio is what scoring costs on
top of the same durable write. Without the flag it is the plain no-op, kept in
the table for reference.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pitstore.serving.audit import AuditLog

app = FastAPI(title="no-op baseline")
DURABLE: list[AuditLog] = []  # the audit log, when --durable-audit is given


@app.post("/v1/score")
async def score(body: dict[str, Any]) -> dict[str, Any]:
    if DURABLE:
        await DURABLE[0].append_async(
            {"decided_at": datetime.now(UTC).isoformat(), "request": body}
        )
    return {"decision": "approve", "fallback": False, "transaction_id": body.get("transaction_id")}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--durable-audit", type=Path, help="append + fsync a record per request")
    args = parser.parse_args()
    if args.durable_audit is not None:
        DURABLE.append(AuditLog(args.durable_audit))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
