"""Benchmark #3's fixtures: the model, the features, the requests, the server processes.

Used by ``bench/score_load.py``; see there for the method.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.http_load import encode_post
from pitstore.serving.auth import entry_for, new_key

ROOT = Path(__file__).resolve().parent.parent
# The scoring API wants a key (docs/security.md): one for this run, sent by
# every request (the no-op servers ignore it), its entry in the server's env.
KEY = new_key()
SERVER_ENV = {"PITSTORE_API_KEYS": entry_for("bench", KEY, ["score", "prescreen"])}
# The tests' feature writers and model cards (tests/serving/test_serving.py,
# tests/serving/prescreen_world.py; the credit frame from tests/training).
sys.path[:0] = [
    str(ROOT / "tests" / "serving"),
    str(ROOT / "tests" / "training"),
    str(ROOT / "tests"),
]
HOST = "127.0.0.1"


# --- setup --------------------------------------------------------------------


def train_model(home: Path) -> None:
    """A production-shaped model (training.model.fit) on synthetic rows, promoted."""
    import test_serving as ts

    from pitstore.core.config import Settings
    from pitstore.models.registry import promote, save_model
    from pitstore.training.model import explanation_card, fit, reference_stats

    frame = ts.synthetic_frame(6000)
    model = fit(frame, ts.COLUMNS)
    x = frame[ts.COLUMNS].to_numpy()
    card = ts.synthetic_card(frame, "bench")
    card["reference"] = reference_stats(frame, ts.COLUMNS)  # what `pitstore train` writes
    card["explanation"] = explanation_card(model)
    settings = Settings(pitstore_home=home)
    save_model(settings, model, card, frame["label"].to_numpy(), model.predict_proba(x)[:, 1])
    promote(settings, ts.VERSION)


def put_features(redis_url: str, accounts: int) -> None:
    import test_serving as ts

    rng = np.random.default_rng(1)
    rows: dict[str, dict[str, float]] = {
        f"A{i:05d}": {"txn_count_1h": int(rng.integers(0, 6)), "amount_mean_30d": 3000.0}
        for i in range(accounts)
    }
    rows.update({f"M{i:03d}": {} for i in range(50)})
    ts.put_features(redis_url, rows, {})


def requests_for(port: int, prefix: str, n: int, accounts: int) -> list[bytes]:
    """Pre-encoded POSTs with unique transaction ids; every account has features."""
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        body = {
            "transaction_id": f"{prefix}-{i}",
            "account_id": f"A{i % accounts:05d}",
            "card_id": "C1",
            "merchant_id": f"M{i % 50:03d}",
            "merchant_category": "online_retail",
            "amount": 1000 + (i * 37) % 90_000,
            "currency": "GBP",
            "channel": ("pos", "ecom", "contactless")[i % 3],
            "country": "GB",
            "device_id": "D1",
            "event_ts": now,
        }
        auth = f"authorization: Bearer {KEY}\r\n"
        out.append(encode_post(HOST, port, "/v1/score", json.dumps(body).encode(), auth))
    return out


def train_credit(home: Path, redis_url: str) -> list[dict[str, Any]]:
    """The PD model (the real credit training code, synthetic frame), promoted
    for credit_v1, its applicants' features in Redis; the applications no hard
    rule declines (so every prescreen reads features and scores the PD)."""
    import prescreen_world as pw

    _, frame = pw.train_and_promote(home)
    now = datetime.now(UTC)
    rows = pw.passing_rows(frame, now)
    pw.put_credit_features(redis_url, rows, now)
    return [pw.application(r, "", now) for _, r in rows.iterrows()]


def prescreen_requests(port: int, prefix: str, n: int, apps: list[dict[str, Any]]) -> list[bytes]:
    """Pre-encoded POST /v1/prescreen with unique application ids."""
    auth = f"authorization: Bearer {KEY}\r\n"
    out = []
    for i in range(n):
        body = {**apps[i % len(apps)], "application_id": f"{prefix}-{i}"}
        out.append(encode_post(HOST, port, "/v1/prescreen", json.dumps(body).encode(), auth))
    return out


# --- servers ------------------------------------------------------------------


def pin_plan() -> dict[str, Any]:
    """The servers and pitstore's Redis on the last core, this client on the others.

    Why Redis with the servers, not with the client: the open-loop client
    spins on its core to send on time (``bench.http_load``), and a Redis woken
    on that core waited for the spinning client's time slice to end: Redis
    round trips measured inside pitstore had a p99 of 3.3 ms there, 0.9 ms
    on the server core (100-300 req/s). The spin is the client's, not
    pitstore's; on the server core Redis's own CPU is charged to pitstore's
    core, as it would be on a one-box deployment. The no-op uses no Redis."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return {"server_core": None, "client_cores": cpus, "redis_cores": cpus}
    return {"server_core": cpus[-1], "client_cores": cpus[:-1], "redis_cores": cpus[-1:]}


Proc = subprocess.Popen  # type: ignore[type-arg]


def start(cmd: list[str], core: int | None, env: dict[str, str], errlog: Path) -> Proc:
    """A server process, pinned to ``core``; stderr to a file (a full pipe would stall it)."""
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    with errlog.open("wb") as err:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


def wait_ready(port: int, proc: Proc, errlog: Path, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited: {errlog.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} not ready after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
