"""Bad input gets a clear error and leaves the offline store exactly as it was."""

from __future__ import annotations

from datetime import timedelta

import pytest
from landing_factory import write_events
from spine_helpers import START, random_events
from typer.testing import CliRunner

from pitstore.cli.app import app
from pitstore.core.config import Settings
from pitstore.core.timeutil import WatermarkError, parse_utc
from pitstore.landing.zone import LandingError
from pitstore.transform.codegen import stale_generated
from pitstore.transform.dbt_engine import TransformError, transform_dbt

runner = CliRunner()


def snapshot(settings: Settings) -> dict:
    return {p: p.read_bytes() for p in settings.offline.rglob("*") if p.is_file()}


@pytest.fixture
def landed(settings: Settings) -> Settings:
    events, labels = random_events(11, days=3, n=40)
    write_events(settings.landing, START, 3, events, labels)
    transform_dbt(settings, START + timedelta(days=1))
    return settings


@pytest.mark.parametrize(
    "text, message",
    [
        ("2026-01-05T00:00:00", "has no UTC offset"),
        ("yesterday", "not an ISO-8601 timestamp"),
        ("2026-13-45T00:00:00+00:00", "not an ISO-8601 timestamp"),
    ],
)
def test_bad_watermark_text(text: str, message: str) -> None:
    with pytest.raises(WatermarkError, match=message):
        parse_utc(text)


def test_cli_naive_watermark_is_refused(landed: Settings) -> None:
    before = snapshot(landed)
    result = runner.invoke(app, ["transform", "--watermark", "2026-03-28T00:00:00"])
    assert result.exit_code == 2
    assert "no UTC offset" in result.output
    assert snapshot(landed) == before


def test_watermark_past_landing_zone(landed: Settings) -> None:
    before = snapshot(landed)
    with pytest.raises(LandingError, match="complete"):
        transform_dbt(landed, START + timedelta(days=3, seconds=1))
    assert snapshot(landed) == before


def test_new_run_before_newest_is_refused(landed: Settings) -> None:
    transform_dbt(landed, START + timedelta(days=2))
    before = snapshot(landed)
    with pytest.raises(TransformError, match="runs must move forward"):
        transform_dbt(landed, START + timedelta(days=1, hours=6))
    assert snapshot(landed) == before


def test_missing_partition(landed: Settings) -> None:
    before = snapshot(landed)
    victim = sorted((landed.landing / "transactions").rglob("*.parquet"))[1]
    victim.unlink()
    with pytest.raises(LandingError, match="missing"):
        transform_dbt(landed, START + timedelta(days=2))
    assert snapshot(landed) == before


def test_corrupt_partition(landed: Settings) -> None:
    before = snapshot(landed)
    victim = sorted((landed.landing / "transactions").rglob("*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(LandingError, match="corrupt|sha256|checksum"):
        transform_dbt(landed, START + timedelta(days=2))
    assert snapshot(landed) == before


def test_generate_negative_days(home) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["generate", "--days", "-3"])
    assert result.exit_code == 2
    assert "days must be >= 1, got -3" in result.output
    assert not (home / "landing").exists()


def test_generated_sql_is_current() -> None:
    assert stale_generated() == [], "run `pitstore codegen` and commit the result"


def test_help_reads_well() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "transform", "apply", "materialize", "online"):
        assert command in result.output
