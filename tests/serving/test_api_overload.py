"""The budget holds under overload: a real server (``pitstore serve`` in a
subprocess), its capacity measured, then 3x that rate for a few seconds.
Answers given stay within the budget; the rest are shed with a 503 and
Retry-After, and counted.

The load client is ``bench.http_load`` (raw asyncio, pre-encoded requests,
latency counted from each request's *scheduled* time, so a server backlog is
never hidden): httpx costs ~1 ms of client CPU per request and could not
offer 3x a server's capacity from the same 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serving import KEY, free_port, metric, put_features, serving_settings, train_tiny_model

from bench.http_load import Run, closed_loop, open_loop
from pitstore.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MS = 100
ACCOUNTS = 200


def encoded(port: int, prefix: str, n: int) -> list[bytes]:
    """Pre-encoded, authenticated POSTs; unique transaction ids (a reused one is a replay)."""
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        body = json.dumps(
            {
                "transaction_id": f"{prefix}-{i}",
                "account_id": f"A{i % ACCOUNTS:05d}",
                "card_id": "C1",
                "merchant_id": f"M{i % 20:03d}",
                "merchant_category": "online_retail",
                "amount": 1000 + (i * 37) % 90_000,
                "currency": "GBP",
                "channel": ("pos", "ecom", "contactless")[i % 3],
                "country": "GB",
                "device_id": "D1",
                "event_ts": now,
            }
        ).encode()
        out.append(
            (
                f"POST /v1/score HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    return out


@dataclass
class Figures:
    capacity_rps: float
    offered_rps: float
    requests: int
    answered: int
    answered_late: int
    shed: int
    other: int
    answered_p50_ms: float
    answered_p99_ms: float
    server_answered: int = 0
    server_late: int = 0  # by the server's own clock

    def line(self) -> str:
        return (
            f"capacity {self.capacity_rps:.0f} req/s, offered {self.offered_rps:.0f} req/s "
            f"({self.requests} requests): {self.answered} answered ({self.answered_late} over "
            f"{BUDGET_MS} ms; p50 {self.answered_p50_ms:.1f} ms, p99 "
            f"{self.answered_p99_ms:.1f} ms), {self.shed} shed, {self.other} other; "
            f"server's clock: {self.server_late} of {self.server_answered} over budget"
        )


def figures(capacity: float, run: Run) -> Figures:
    statuses = np.array(run.statuses)
    lat_ms = np.array(run.latencies_s) * 1000
    ok = lat_ms[statuses == 200] if len(statuses) else np.zeros(0)
    return Figures(
        capacity_rps=capacity,
        offered_rps=run.target_rps or 0.0,
        requests=len(statuses),
        answered=int((statuses == 200).sum()),
        answered_late=int((ok > BUDGET_MS).sum()),
        shed=int(((statuses == 503) | (statuses == 429)).sum()),
        other=int(((statuses != 200) & (statuses != 503) & (statuses != 429)).sum())
        + run.transport_errors,
        answered_p50_ms=float(np.percentile(ok, 50)) if len(ok) else 0.0,
        answered_p99_ms=float(np.percentile(ok, 99)) if len(ok) else 0.0,
    )


async def overload(port: int, factor: float = 3.0, seconds: float = 4.0) -> Figures:
    """The server's closed-loop capacity, then ``factor`` times it, open loop."""
    # Few connections: enough to keep the server busy, too few to make it shed
    # (a closed loop answered by instant 503s turns into a flood of requests).
    await closed_loop("127.0.0.1", port, encoded(port, "warm", 2_000), 4, 1.0)
    cap = await closed_loop("127.0.0.1", port, encoded(port, "cap", 20_000), 8, 2.0)
    capacity = cap.statuses.count(200) / cap.seconds
    print(cap.summary(), {s: cap.statuses.count(s) for s in set(cap.statuses)})
    assert capacity > 0, (set(cap.statuses), cap.transport_errors, cap.bodies[:1])
    rate = factor * capacity
    requests = encoded(port, "over", int(rate * seconds))
    before = server_counts(port)
    run = await open_loop("127.0.0.1", port, requests, rate, connections=512)
    after = server_counts(port)
    print(run.summary())
    result = figures(capacity, run)
    result.server_answered = int(after[0] - before[0])
    result.server_late = int(after[0] - after[1] - (before[0] - before[1]))
    return result


def server_counts(port: int) -> tuple[float, float]:
    """The server's own count of answers, and of those within the budget (its
    clock starts when the request's headers are in: the time before that, in
    socket buffers or a descheduled process, only the client sees)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    print([m for m in text.splitlines() if m.startswith(("pitstore_admission", "pitstore_loop"))])
    within = f'pitstore_score_latency_seconds_bucket{{le="{BUDGET_MS / 1000}"}}'
    return (
        metric(text, "pitstore_score_latency_seconds_count"),
        metric(text, within),
    )


def start_server(port: int, env: dict[str, str], errlog: Path) -> subprocess.Popen[bytes]:
    """``pitstore serve`` on one core (the last; the load client uses the others)."""
    cmd = [sys.executable, "-m", "pitstore.cli.app", "serve", "--port", str(port)]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1 and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpus[-1]), *cmd]
    with errlog.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, errlog.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server not ready: {errlog.read_text()[-2000:]}")


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[int]:
    train_tiny_model(settings.home)
    rows: dict[str, dict[str, float]] = {
        f"A{i:05d}": {"txn_count_1h": i % 5, "amount_mean_30d": 3000.0} for i in range(ACCOUNTS)
    }
    rows.update({f"M{i:03d}": {} for i in range(20)})
    put_features(settings.redis_url, rows, {})
    ss = serving_settings(settings, budget_ms=BUDGET_MS)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PITSTORE_HOME": str(settings.home),
        "REDIS_URL": settings.redis_url,
        "PITSTORE_BUDGET_MS": str(BUDGET_MS),
        "PITSTORE_API_KEYS": ss.api_keys,
    }
    port = free_port()
    proc = start_server(port, env, tmp_path / "server.err")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.slow
def test_three_times_capacity_sheds_and_keeps_the_budget(server: int) -> None:
    port = server
    result = asyncio.run(overload(port))
    print(result.line())
    # What must hold on any host: every answer is a decision or a 503 with
    # Retry-After (no errors, no queue without a deadline), and 3x the capacity
    # is shed, not queued. How many answers stay in the budget depends on the
    # host (a shared 2-core VM deschedules server and client for tens of ms):
    # it is printed here and measured as a benchmark, not asserted.
    assert result.other == 0, result.line()
    assert result.shed > 0.3 * result.requests, result.line()  # 3x: about 2/3 must go
    assert result.answered > 0, result.line()
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    shed = metric(text, "pitstore_score_shed_total")
    assert shed == metric(text, "pitstore_score_requests_total", status="503") >= result.shed
