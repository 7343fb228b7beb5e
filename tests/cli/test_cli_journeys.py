"""The CLI as a user and CI drive it: backfill, wrong input, parity's default W."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pitstore.cli.app import app
from pitstore.core.config import Settings
from pitstore.core.runs import completed_watermarks
from pitstore.core.timeutil import to_us

START = datetime(2026, 1, 5, tzinfo=UTC)
runner = CliRunner()


def land(home: Path, url: str) -> Settings:
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import GeneratorParams, generate

    settings = Settings(pitstore_home=home, redis_url=url)
    params = GeneratorParams(accounts=50, merchants=10, days=6, start=START)
    write_landing(generate(params), settings.landing)
    return settings


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory, redis_proc) -> Settings:  # type: ignore[no-untyped-def]
    """A landed home nothing has run on yet."""
    url = f"redis://{redis_proc.host}:{redis_proc.port}/4"
    return land(tmp_path_factory.mktemp("cli-home"), url)


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory, redis_proc) -> Settings:  # type: ignore[no-untyped-def]
    """Another landed home, its six daily runs made and the last one materialized."""
    url = f"redis://{redis_proc.host}:{redis_proc.port}/5"
    settings = land(tmp_path_factory.mktemp("cli-backfilled"), url)
    res = run(settings, "backfill", "--from", "2026-01-06", "--to", "2026-01-11", "--materialize")
    assert res.exit_code == 0, res.output
    return settings


def run(settings: Settings, *args: str) -> object:
    env = {"PITSTORE_HOME": str(settings.home), "REDIS_URL": settings.redis_url}
    return runner.invoke(app, list(args), env=env)


def test_backfill_replays_in_order_resumes_and_refuses_what_it_cannot(landed: Settings) -> None:
    # A first slice, as if killed after three days; then the whole range resumes.
    res = run(landed, "backfill", "--from", "2026-01-06", "--to", "2026-01-08")
    assert res.exit_code == 0, res.output
    assert len(completed_watermarks(landed)) == 3
    res = run(landed, "backfill", "--from", "2026-01-06", "--to", "2026-01-11", "--materialize")
    assert res.exit_code == 0, res.output
    assert "3 run(s) made, 3 skipped" in res.output
    days = [START + timedelta(days=d) for d in range(1, 7)]
    assert completed_watermarks(landed) == [to_us(d) for d in days]
    # Idempotent: nothing left to do.
    res = run(landed, "backfill", "--from", "2026-01-06", "--to", "2026-01-11")
    assert res.exit_code == 0 and "0 run(s) made, 6 skipped" in res.output
    # Before the newest run: refused in one line, nothing written.
    res = run(landed, "backfill", "--from", "2026-01-01", "--to", "2026-01-03")
    assert res.exit_code == 2 and "runs move forward" in res.output
    assert "Traceback" not in res.output
    res = run(landed, "backfill", "--from", "2026-01-09", "--to", "2026-01-08")
    assert res.exit_code == 2 and "before --from" in res.output
    res = run(landed, "backfill", "--from", "2026-01-09", "--to", "2999-01-01")
    assert res.exit_code == 2 and "future" in res.output
    assert len(completed_watermarks(landed)) == 6


def test_parity_online_defaults_to_the_watermark_redis_holds(backfilled: Settings) -> None:
    res = run(backfilled, "parity", "online", "--sample", "20")
    assert res.exit_code == 0, res.output
    assert "W=2026-01-11T00:00:00+00:00" in res.output and "PASS" in res.output
    assert "…" not in res.output.replace("… building", "")  # nothing cut at 80 columns


def test_wrong_frame_input_is_one_clear_line(landed: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    res = run(landed, "training-frame", "--requests", str(bad))
    assert res.exit_code == 2 and ".csv or .parquet" in res.output and "Traceback" not in res.output
    res = run(landed, "training-frame", "--requests", str(bad), "--labels-known-by", "2026-01-11")
    assert res.exit_code == 2 and "not both" in res.output
    res = run(landed, "training-frame")
    assert res.exit_code == 2


def test_an_unknown_entity_is_counted_warned_and_fails_the_frame(
    backfilled: Settings, tmp_path: Path
) -> None:
    req = tmp_path / "req.csv"
    pd.DataFrame(
        {
            "account_id": ["A000001", "A00001"],
            "merchant_id": ["M00001", "M00002"],
            "ts": ["2026-01-09T12:00:00+00:00", "2026-01-09T13:00:00+00:00"],
        }
    ).to_csv(req, index=False)
    res = run(backfilled, "training-frame", "--requests", str(req), "--out", str(tmp_path / "f"))
    assert res.exit_code == 1, res.output
    assert "1 request rows have entity keys the store never saw" in res.output
    assert (tmp_path / "f" / "manifest.json").exists()  # the frame is still written


@pytest.mark.parametrize("text", ["2026-02-19", "2026-02-19T10:00", "2026-02-19 10:00:00.5"])
def test_the_missing_offset_hint_is_itself_valid(text: str) -> None:
    from pitstore.core.timeutil import WatermarkError, parse_utc

    with pytest.raises(WatermarkError) as caught:
        parse_utc(text)
    hint = str(caught.value).split("e.g. ")[1]
    assert parse_utc(hint).isoformat() == hint
