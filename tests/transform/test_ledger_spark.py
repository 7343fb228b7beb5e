"""Spark == dbt == the oracle on the ledger view; both engines quarantine the same
bad ledger, application and outcome rows and publish byte-identical events files."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from landing_factory import application_row, iso_with_offset, outcome_row, write_events
from spine_helpers import DAY, HOUR, START, offline_rows, random_events, random_ledger
from test_ledger_dbt import OFFSETS, bad_ledger_rows

from pitstore.core.config import Settings
from pitstore.core.offline_layout import EVENTS_SCHEMAS, events_relpath, read_events
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import to_us
from pitstore.transform.dbt_engine import transform_dbt
from pitstore.transform.spark.job import Layout, run_job
from tests import reference

pytestmark = pytest.mark.spark

DAYS = 5
WATERMARKS = [START + timedelta(hours=h) for h in (36, 72, 120)]


def credit_rows() -> dict[str, list[tuple[int, int, dict[str, Any]]]]:
    """Applications and outcomes: valid ones, later duplicate copies, and one bad row
    per reason."""
    t = to_us(START) + 5 * HOUR
    ts = iso_with_offset(t, -300)
    apps = [
        application_row("P1", t + HOUR, ts),
        application_row("P2", t + DAY, iso_with_offset(t + DAY - 5, 840)),
        application_row("P1", t + 2 * DAY, ts, amount=999.0),  # a later copy: ignored
        application_row(None, t + HOUR, ts),
        application_row("X1", t + HOUR, ts, applicant_age=0),
        application_row("X2", t + HOUR, ts, term_months=None),
        application_row("X3", t + HOUR, ts, amount=0.0),
        application_row("X4", t + HOUR, ts, amount=10.5),
        application_row("X5", t + HOUR, ts, stated_income=-1.0),
        application_row("X6", t + HOUR, ts, existing_debt=float("nan")),
        application_row("X7", t + HOUR, "2026-03-27T05:00:00"),
        application_row("X8", t + HOUR, iso_with_offset(t + 2 * HOUR)),
        application_row("X9", t + HOUR, ts, stated_income=None, existing_debt=None),
    ]
    outcomes = [
        outcome_row("P1", False, t + 2 * DAY, t + 2 * DAY + 1),
        outcome_row("P1", True, t + 2 * DAY, t + 3 * DAY),  # a later copy: ignored
        outcome_row(None, True, t, t + HOUR),
        outcome_row("P2", None, t, t + HOUR),
        outcome_row("P2", True, t + 3 * HOUR, t + HOUR),
    ]
    return {
        "applications": [(to_us(r["ingested_at"]), i, r) for i, r in enumerate(apps)],
        "credit_outcomes": [(to_us(r["ingested_at"]), i, r) for i, r in enumerate(outcomes)],
    }


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("ledger-engines")
    tx, labels = random_events(21, days=DAYS, n=40)
    ledger = random_ledger(21, days=DAYS, n=200)
    write_events(
        root / "dbt" / "landing",
        START,
        DAYS,
        tx,
        labels,
        offsets=OFFSETS,
        ledger=ledger,
        ledger_rows=bad_ledger_rows(),
        raw=credit_rows(),
    )
    shutil.copytree(root / "dbt" / "landing", root / "spark" / "landing")
    settings = {e: Settings(pitstore_home=root / e) for e in ("dbt", "spark")}
    summaries: dict[str, list] = {"dbt": [], "spark": []}
    for w in WATERMARKS:
        summaries["dbt"].append(transform_dbt(settings["dbt"], w))
        layout = Layout.from_settings(settings["spark"])
        summaries["spark"].append(run_job(spark, layout, w))
    events = [*tx, *reference.landed_events([]), *ledger]
    return {"settings": settings, "summaries": summaries, "events": events, "labels": labels}


def test_every_view_equals_the_oracle_on_both_engines(homes: dict[str, Any]) -> None:
    from tests import reference_ledger

    events = homes["events"] + reference_ledger.landed_events(bad_ledger_rows())
    for view in FEATURE_VIEWS:
        stored: list = []
        for w in WATERMARKS:
            expected = sorted(reference.run(view, events, homes["labels"], to_us(w), stored))
            for engine, settings in homes["settings"].items():
                actual = offline_rows(settings.offline, view, w)
                assert actual == expected, f"{engine}: {view.name} at {w} != oracle"
            stored.extend(expected)
        assert stored, view.name


def test_same_quarantine_on_both_engines(homes: dict[str, Any]) -> None:
    dbt, spark = homes["summaries"]["dbt"], homes["summaries"]["spark"]
    assert [s.quarantined_new for s in dbt] == [s.quarantined_new for s in spark]
    assert [s.quarantined_total for s in dbt] == [s.quarantined_total for s in spark]
    first = dbt[0].quarantined_new
    for reason in (
        "unknown event_type",
        "null balance",
        "amount on a balance_snapshot",
        "applicant_age not positive",
        "null term_months",
        "amount not positive",
        "amount is not in whole minor units",
        "negative stated_income",
        "existing_debt is NaN or infinite",
        "naive application_ts (no UTC offset)",
        "application_ts after ingested_at",
        "null application_id",
        "null defaulted",
        "label_ts after ingested_at",
    ):
        assert reason in first, (reason, first)


def test_events_files_are_byte_identical(homes: dict[str, Any]) -> None:
    dbt, spark = homes["settings"]["dbt"], homes["settings"]["spark"]
    for dataset in EVENTS_SCHEMAS:
        for w in WATERMARKS:
            rel = events_relpath(dataset, to_us(w))
            assert (spark.offline / rel).read_bytes() == (dbt.offline / rel).read_bytes(), rel
    apps = read_events(dbt, "applications")
    assert sorted(apps.column("application_id").to_pylist()) == ["P1", "P2", "X9"]
    amounts = dict(zip(apps["application_id"].to_pylist(), apps["amount"].to_pylist()))
    assert amounts["P1"] == 500_000  # the first copy, not the later one
    outcomes = read_events(dbt, "credit_outcomes").to_pylist()
    assert [(o["application_id"], o["defaulted"]) for o in outcomes] == [("P1", False)]
    assert read_events(dbt, "ledger").num_rows > 100
