"""Bounded async load run against /v1/score on loopback (not part of the tests).

Starts a real uvicorn server (a subprocess, so the load client does not share
its GIL) on a free port, a private redis-server with a few thousand accounts'
features, a small promoted model, then fires N requests with C concurrent
clients (httpx) and reports throughput, p50/p99, decisions and fallbacks, and
checks the audit log holds exactly one record per 200 response.

    .venv/bin/python -m bench.score_load --requests 3000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def setup(home: Path, redis_url: str, accounts: int) -> None:
    import test_serving as ts  # the tests' tiny model + feature writer

    ts.train_tiny_model(home)
    rng = np.random.default_rng(1)
    rows = {
        f"A{i:05d}": {"txn_count_1h": int(rng.integers(0, 6)), "amount_mean_30d": 3000.0}
        for i in range(accounts)
    }
    rows.update({f"M{i:03d}": {} for i in range(50)})
    ts.put_features(redis_url, rows, {})


async def run(url: str, n: int, concurrency: int, accounts: int) -> dict[str, object]:
    from test_serving import txn

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    decisions: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(http: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = txn(
                transaction_id=f"bench-{i}",
                account_id=f"A{i % accounts:05d}",
                merchant_id=f"M{i % 50:03d}",
                amount=1000 + (i * 37) % 90_000,
                channel=("pos", "ecom", "contactless")[i % 3],
            )
            started = time.perf_counter()
            r = await http.post("/v1/score", json=body)
            latencies.append(time.perf_counter() - started)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                data = r.json()
                decisions[data["decision"]] += 1
                fallbacks[str(data["fallback"])] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
        for i in range(min(50, n)):  # warm-up (not counted)
            await http.post("/v1/score", json=txn(transaction_id=f"warm-{i}", account_id="A00000"))
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "requests": n,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(n / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "statuses": dict(statuses),
        "decisions": dict(decisions),
        "fallbacks": dict(fallbacks),
        "warmup": min(50, n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--budget-ms", type=int, default=100)
    parser.add_argument(
        "--noop",
        action="store_true",
        help="Load the no-op baseline (bench/noop_app.py) instead of pitstore serve.",
    )
    args = parser.parse_args()

    from test_serving import free_port, start_redis

    from serving.audit import count_records

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        rport, port = free_port(), free_port()
        redis_proc = start_redis(rport, Path(tmp))
        redis_url = f"redis://127.0.0.1:{rport}/0"
        env = {
            **os.environ,
            "PITSTORE_HOME": str(home),
            "REDIS_URL": redis_url,
            "PITSTORE_BUDGET_MS": str(args.budget_ms),
        }
        server = None
        try:
            if not args.noop:
                setup(home, redis_url, args.accounts)
            command = (
                ["-m", "bench.noop_app", "--port", str(port)]
                if args.noop
                else ["-m", "pitstore.cli", "serve", "--port", str(port)]
            )
            server = subprocess.Popen(
                [sys.executable, *command],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            result = asyncio.run(run(url, args.requests, args.concurrency, args.accounts))
            if args.noop:  # nothing is audited: only the HTTP figures count
                for key, value in result.items():
                    print(f"{key:>24}: {value}")
                return
            audited = count_records(home / "audit")
            answered = result["statuses"].get(200, 0) + result["warmup"]  # type: ignore[union-attr]
            result["audit_records"] = audited
            result["audit_matches_responses"] = audited == answered
            for key, value in result.items():
                print(f"{key:>24}: {value}")
            if audited != answered:
                raise SystemExit(f"audit log has {audited} records for {answered} responses")
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)
            redis_proc.kill()
            redis_proc.wait()


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} not ready after {timeout} s")


if __name__ == "__main__":
    main()
