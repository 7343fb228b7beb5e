"""Run invariants with real processes on the dbt engine: the run lock, a SIGKILLed
run's files, a full disk (a tiny tmpfs in a private mount namespace)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from landing_factory import write_events
from spine_helpers import START, offline_rows, random_events

from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import stamp, to_us
from pitstore.transform.dbt_engine import transform_dbt

REPO = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)


@pytest.fixture
def landed(home: Path) -> Settings:
    settings = Settings(pitstore_home=home)
    events, labels = random_events(31, days=4, n=60)
    write_events(settings.landing, START, 4, events, labels)
    return settings


def env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PITSTORE_HOME": str(settings.home),
        "PYTHONPATH": str(REPO),
        "COLUMNS": "400",  # rich wraps the error line at the terminal width
    }


def transform_cmd(w: str) -> list[str]:
    return [sys.executable, "-m", "pitstore.cli.app", "transform", "--watermark", w]


def start(settings: Settings, cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd,
        env=env(settings),
        cwd=settings.home.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def markers(settings: Settings) -> dict[int, dict]:
    folder = settings.offline / "_runs"
    out = {}
    for p in sorted(folder.glob("run-*.json")) if folder.is_dir() else []:
        body = json.loads(p.read_text())
        out[body["watermark_us"]] = body
    return out


def store_matches_markers(settings: Settings) -> None:
    """Every file in the views' directories is one a completed run published, unchanged."""
    listed = {rel: e for m in markers(settings).values() for rel, e in m["files"].items()}
    present = {
        p.relative_to(settings.offline).as_posix(): p.stat().st_size
        for v in FEATURE_VIEWS
        for p in (settings.offline / v.name).glob("*")
    }
    assert present == {rel: e["bytes"] for rel, e in listed.items()}


HOLDER = """
import sys, time
from pathlib import Path
from pitstore.core.run_lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_lock(settings: Settings) -> subprocess.Popen[str]:
    holder = start(settings, [sys.executable, "-c", HOLDER, str(settings.home)])
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked", holder.stderr
    return holder


def test_a_run_while_another_holds_the_lock_fails_in_one_line(landed: Settings) -> None:
    holder = hold_lock(landed)
    try:
        result = subprocess.run(
            transform_cmd("2026-03-28T00:00:00+00:00"),
            env=env(landed),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stderr
    assert "another run holds the lock since 20" in result.stderr
    assert f"pid {holder.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not markers(landed)
    # The holder died by SIGKILL: its lock died with it.
    transform_dbt(landed, START + DAY)
    assert list(markers(landed)) == [to_us(START + DAY)]


def test_two_concurrent_runs_never_both_write(landed: Settings) -> None:
    transform_dbt(landed, START + DAY)
    runs = [
        start(landed, transform_cmd(w))
        for w in ("2026-03-29T00:00:00+00:00", "2026-03-29T00:00:00+00:00")
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in runs]
    for code, err in outcomes:
        assert "Traceback" not in err, err
        # The loser may find the lock before or after the winner wrote who holds
        # it: both are the same one-line refusal ("since ..." or "just starting").
        assert code == 0 or (code == 1 and "another run holds the lock" in err), err
    assert any(code == 0 for code, _ in outcomes)
    assert sorted(markers(landed)) == [to_us(START + DAY), to_us(START + 2 * DAY)]
    store_matches_markers(landed)


def kill_after_first_export(settings: Settings, w_text: str, w_stamp: str) -> bool:
    """SIGKILL the run at W as soon as one view's file is published; False if it
    finished first."""
    files = [settings.offline / v.name / f"run-{w_stamp}.parquet" for v in FEATURE_VIEWS]
    proc = start(settings, transform_cmd(w_text))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any(f.exists() for f in files):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def test_a_killed_runs_files_go_before_a_later_run(landed: Settings) -> None:
    w1 = START + DAY
    transform_dbt(landed, w1)
    # The kill must land between the first view's file and the marker: retry a
    # later W in the (unlikely) case the run won the race.
    for hours in (36, 42, 48):
        w2 = START + timedelta(hours=hours)
        if kill_after_first_export(landed, w2.isoformat(), stamp(w2)):
            break
    else:
        pytest.fail("the run finished before it could be killed three times")
    leftovers = [p for v in FEATURE_VIEWS for p in (landed.offline / v.name).glob("run-*")]
    assert any(stamp(w2) in p.name for p in leftovers)  # the killed run left files
    assert to_us(w2) not in markers(landed)

    w3 = START + 3 * DAY
    result = subprocess.run(
        transform_cmd(w3.isoformat()), env=env(landed), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for view in FEATURE_VIEWS:
        assert to_us(w2) not in {r[2] for r in offline_rows(landed.offline, view)}, view.name
    store_matches_markers(landed)
    marker = markers(landed)[to_us(w3)]
    assert marker["summary"]["previous_watermark"] == stamp(w1)
    assert any(stamp(w2) in rel for rel in marker["summary"]["orphans_removed"])
    assert any(stamp(w2) in p.name for p in (landed.offline / "_orphans").rglob("*"))


def test_a_full_disk_during_export_is_one_line(landed: Settings) -> None:
    """The offline store is a full 64 KiB tmpfs (in a private mount namespace, so
    no one else sees it): the first view's file does not fit."""
    # A requirement, not a skip: util-linux's unshare and a private mount
    # namespace exist on the machines `make test` targets (CI runs as root).
    assert shutil.which("unshare"), "this test needs unshare(1) (util-linux)"
    target = landed.offline
    target.mkdir(parents=True)
    mount = f"mount -t tmpfs -o size=64k tmpfs '{target}'"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True)
    assert probe.returncode == 0, f"cannot mount a private tmpfs: {probe.stderr.decode()}"
    # Fill it up (outside the engines' directories, so no sweep frees it).
    fill = '(head -c 1M /dev/zero > "$1/filler") 2>/dev/null'
    script = f'{mount} && {{ {fill}; true; }} && shift && exec "$@"'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(target)]
        + transform_cmd("2026-03-28T00:00:00+00:00"),
        env=env(landed),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No space left on device" in result.stderr
    assert f"cannot write {target}/" in result.stderr
    assert "Traceback" not in result.stderr
    assert not markers(landed)
    # With room again the same run completes.
    transform_dbt(landed, START + DAY)
    store_matches_markers(landed)
