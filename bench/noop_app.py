"""Benchmark #3's baseline: a FastAPI endpoint that does nothing, served like pitstore.

Same framework, same uvicorn settings (host, log level, one process), same
request body: the difference in latency is what pitstore's scoring costs.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastapi import FastAPI

app = FastAPI(title="no-op baseline")


@app.post("/v1/score")
async def score(body: dict[str, Any]) -> dict[str, Any]:
    return {"decision": "approve", "fallback": False, "transaction_id": body.get("transaction_id")}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
