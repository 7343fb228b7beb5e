"""`pitstore materialize` never leaves Redis wrong with exit 0: real CLI processes,
a real Redis, a real dbt transform.

Each test reproduces an operator mistake or a race that the materializer once
let through silently (watermark with no run, a future watermark, an older W
with --full, two materializations at once) and checks the repair command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from pitstore.checks.parity import check_online
from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_HOURLY, FEATURE_VIEWS, FRAUD_V1
from pitstore.core.timeutil import from_us
from pitstore.landing.zone import write_landing
from pitstore.synth.generate import GeneratorParams, generate
from pitstore.transform.dbt_engine import transform_dbt

DAY0 = datetime(2026, 1, 5, tzinfo=UTC)
W1, W2, W3 = (DAY0 + timedelta(days=d) for d in (1, 2, 3))
MARKER = "pitstore:materialized:{view}"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pitstore.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def marker(settings: Settings, view: str = "account_hourly") -> datetime | None:
    raw = redis.Redis.from_url(settings.redis_url).get(MARKER.format(view=view))
    return None if raw is None else from_us(int(raw))


def one_clear_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == code, out
    assert "Traceback" not in out, out
    for word in words:
        assert word in out, (word, out)
    return out


@pytest.fixture
def landed(settings: Settings) -> Settings:
    params = GeneratorParams(accounts=60, merchants=10, days=4, seed=11, start=DAY0)
    write_landing(generate(params), settings.landing)
    return settings


def test_refuses_a_watermark_without_a_completed_run(landed: Settings) -> None:
    settings = landed
    # Before any transform: refused, nothing written, the marker does not move.
    r = cli("materialize", "-w", W1.isoformat(), "--view", "account_hourly")
    one_clear_line(r, 2, "no completed transform run", "no run completed yet")
    assert marker(settings) is None
    transform_dbt(settings, W1)
    r = cli("materialize", "-w", W2.isoformat(), "--view", "account_hourly")
    one_clear_line(r, 2, "no completed transform run", W1.isoformat())
    assert marker(settings) is None
    # Once the run exists, the same command writes the whole state at W.
    transform_dbt(settings, W2)
    r = cli("materialize", "-w", W2.isoformat())
    assert r.returncode == 0, r.stderr
    assert marker(settings) == W2
    assert check_online(settings, FRAUD_V1, W2).passed


def test_refuses_future_watermark_unknown_view_and_redis_down(landed: Settings) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    r = cli("materialize", "-w", future.isoformat())
    one_clear_line(r, 2, "in the future", "clock skew")
    r = cli("materialize", "-w", W1.isoformat(), "--view", "nope")
    one_clear_line(r, 2, "nope", *(v.name for v in FEATURE_VIEWS))
    r = cli("materialize", "-w", W1.isoformat(), "--reset-to", W1.isoformat())
    one_clear_line(r, 2, "exactly one of")
    transform_dbt(landed, W1)
    r = cli("materialize", "-w", W1.isoformat(), env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    one_clear_line(r, 1, "unreachable")


def test_older_watermark_never_moves_redis_back_and_reset_repairs(landed: Settings) -> None:
    settings = landed
    for w in (W1, W2):
        transform_dbt(settings, w)
    assert cli("materialize", "-w", W2.isoformat()).returncode == 0
    # An older W, even with --full, leaves the newer state alone (exit 0, says so).
    r = cli("materialize", "-w", W1.isoformat(), "--full")
    one_clear_line(r, 0, "skipped", W2.isoformat())
    assert marker(settings) == W2
    assert check_online(settings, FRAUD_V1, W2).passed
    # Say W2 was materialized by mistake: --reset-to W1 is the documented repair.
    r = cli("materialize", "--reset-to", W3.isoformat())
    one_clear_line(r, 2, "no completed transform run", W2.isoformat())
    r = cli("materialize", "--reset-to", W1.isoformat())
    assert r.returncode == 0, r.stderr
    for view in FEATURE_VIEWS:
        assert marker(settings, view.name) == W1
    assert check_online(settings, FRAUD_V1, W1).passed
    # The normal path then moves forward again from W1.
    assert cli("materialize", "-w", W2.isoformat()).returncode == 0
    assert marker(settings) == W2
    assert check_online(settings, FRAUD_V1, W2).passed


# A materialize process that stops before its second batch until told to go on:
# the older writer of the race below, still writing when the newer one runs.
SLOW_WRITER = """
import sys, time
from pathlib import Path
import pitstore.online.materialize as m
m.BATCH = 5
started, go = Path(sys.argv[1]), Path(sys.argv[2])
real, calls = m._write_batch, [0]
def paused(*args):
    calls[0] += 1
    if calls[0] == 2:
        started.touch()
        while not go.exists():
            time.sleep(0.05)
    return real(*args)
m._write_batch = paused
from pitstore.cli.app import app
sys.argv = ["pitstore", *sys.argv[3:]]
app()
"""


def test_two_materializations_at_once_end_at_the_newer(landed: Settings, tmp_path: Path) -> None:
    settings = landed
    for w in (W1, W2):
        transform_dbt(settings, w)
    started, go = tmp_path / "started", tmp_path / "go"
    older = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(started), str(go)]
        + ["materialize", "-w", W1.isoformat(), "--view", "account_hourly"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # a loaded machine starts Python slowly
        while not started.exists():
            assert older.poll() is None, older.communicate()
            if time.monotonic() > deadline:
                older.kill()
                raise AssertionError(f"the older writer never wrote: {older.communicate()}")
            time.sleep(0.05)
        newer = cli("materialize", "-w", W2.isoformat(), "--view", "account_hourly")
        assert newer.returncode == 0, newer.stderr
        assert marker(settings) == W2
        go.touch()
        out, errs = older.communicate(timeout=120)
    finally:
        if older.poll() is None:
            older.kill()
    assert older.returncode == 0, errs
    assert "superseded" in out, out
    assert marker(settings) == W2
    report = check_online(settings, FRAUD_V1, W2)
    hourly = next(v for v in report.views if v.view == ACCOUNT_HOURLY.name)
    assert not [m for m in report.mismatches if m.view == ACCOUNT_HOURLY.name], hourly
