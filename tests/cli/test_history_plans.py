"""The run plans behind a credit history replay: backfill --every and the demo's weekly runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from pitstore.cli.backfill import daily_watermarks
from pitstore.cli.demo import credit_history_watermarks
from pitstore.landing.zone import write_landing
from pitstore.synth.generate import CreditParams, GeneratorParams, generate


def test_every_n_days_keeps_the_last_day() -> None:
    days = daily_watermarks(date(2025, 1, 1), date(2025, 1, 20), every=7)
    assert [w.day for w in days] == [1, 8, 15, 20]
    assert daily_watermarks(date(2025, 1, 1), date(2025, 1, 3)) == [
        datetime(2025, 1, d, tzinfo=UTC) for d in (1, 2, 3)
    ]


def test_the_demo_history_starts_with_the_first_landed_day_and_stops_before_the_card_feed(
    tmp_path,
) -> None:
    params = GeneratorParams(
        accounts=20, merchants=20, days=3, credit=CreditParams(history_days=40)
    )
    manifest = write_landing(generate(params), tmp_path / "landing")
    plan = credit_history_watermarks(manifest, params)
    first_landed = min(p.ingest_date for p in manifest.partitions)
    assert plan[0].date() == first_landed + timedelta(days=1)  # its rows are all ingested
    assert all(b - a == timedelta(days=7) for a, b in zip(plan, plan[1:], strict=False))
    assert plan[-1] < params.start <= plan[-1] + timedelta(days=7)
