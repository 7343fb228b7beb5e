"""Run bookkeeping on the dbt engine, in process: the completed-run marker, watermarks
at full precision, full refresh, and one clear line for a damaged store or warehouse."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from landing_factory import write_events
from spine_helpers import START, offline_rows, random_events
from typer.testing import CliRunner

from pitstore.cli.app import app
from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import to_us
from pitstore.transform.dbt_engine import transform_dbt

runner = CliRunner()
DAY = timedelta(days=1)


@pytest.fixture
def landed(home: Path) -> Settings:
    settings = Settings(pitstore_home=home)
    events, labels = random_events(23, days=3, n=60)
    write_events(settings.landing, START, 3, events, labels)
    return settings


def markers(settings: Settings) -> list[dict]:
    folder = settings.offline / "_runs"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("run-*.json"))]


def test_marker_lists_what_the_run_published(landed: Settings) -> None:
    w = START + DAY
    summary = transform_dbt(landed, w)
    [marker] = markers(landed)
    assert marker["engine"] == "dbt"
    assert marker["watermark_us"] == to_us(w)
    assert marker["summary"]["rows_appended"] == summary.rows_appended
    assert sorted(marker["files"]) == sorted(
        f"{v.name}/run-20260328T000000.000000Z.parquet" for v in FEATURE_VIEWS
    )
    for rel, entry in marker["files"].items():
        data = (landed.offline / rel).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # One format: no second record of the run elsewhere.
    assert not landed.runs.exists() or not any(landed.runs.iterdir())
    assert sorted(p.name for p in (landed.offline / "_runs").iterdir()) == [
        "run-20260328T000000.000000Z.json"
    ]


def test_subsecond_watermarks_are_two_runs(landed: Settings) -> None:
    """Runs 0.5 s apart used to share a stamp: the second replaced the first's rows."""
    from pitstore.core.runs import completed_watermarks

    transform_dbt(landed, START + DAY)
    w1 = START + DAY + timedelta(hours=12, microseconds=250_000)
    w2 = START + DAY + timedelta(hours=12, microseconds=750_000)
    first = transform_dbt(landed, w1)
    assert sum(first.rows_appended.values()) > 0
    transform_dbt(landed, w2)
    assert completed_watermarks(landed) == [to_us(START + DAY), to_us(w1), to_us(w2)]
    for view in FEATURE_VIEWS:
        created = [r[2] for r in offline_rows(landed.offline, view)]
        assert created.count(to_us(w1)) == first.rows_appended[view.name], view.name


def test_full_refresh_forgets_every_earlier_run(landed: Settings) -> None:
    transform_dbt(landed, START + DAY)
    transform_dbt(landed, START + 2 * DAY)
    transform_dbt(landed, START + 2 * DAY, full_refresh=True)
    assert [m["watermark_us"] for m in markers(landed)] == [to_us(START + 2 * DAY)]
    for view in FEATURE_VIEWS:
        assert [p.name for p in (landed.offline / view.name).iterdir()] == [
            "run-20260329T000000.000000Z.parquet"
        ]


def cli_transform(w: str) -> tuple[int, str]:
    result = runner.invoke(app, ["transform", "--watermark", w])
    # An uncaught exception would be the test's own failure, not an exit code.
    assert isinstance(result.exception, SystemExit | None), result.exception
    return result.exit_code, result.output


def test_damaged_offline_file_is_one_line(landed: Settings) -> None:
    transform_dbt(landed, START + DAY)
    victim = next((landed.offline / "account_daily").glob("run-*.parquet"))
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as by a full disk or a copy
    code, out = cli_transform("2026-03-29T00:00:00+00:00")
    assert code == 1
    assert "account_daily/run-20260328T000000.000000Z.parquet is 100 bytes" in out
    assert "Traceback" not in out
    assert [m["watermark_us"] for m in markers(landed)] == [to_us(START + DAY)]


def test_damaged_warehouse_is_one_line(landed: Settings) -> None:
    transform_dbt(landed, START + DAY)
    landed.warehouse.write_bytes(b"not a database" * 1000)
    code, out = cli_transform("2026-03-29T00:00:00+00:00")
    assert code == 1
    assert "cannot open the warehouse" in out
    assert "Traceback" not in out
    assert [m["watermark_us"] for m in markers(landed)] == [to_us(START + DAY)]


def test_unknown_engine_is_a_usage_error(landed: Settings) -> None:
    result = runner.invoke(app, ["transform", "-w", "2026-03-29T00:00:00+00:00", "--engine", "x"])
    assert result.exit_code == 2
    assert "unknown engine 'x'" in result.output
