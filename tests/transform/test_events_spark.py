"""A home built only by the Spark engine trains: it publishes the same events as the
dbt engine (byte for byte), and its training frame equals the dbt home's."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pitstore.cli.app import app
from pitstore.core.config import Settings
from pitstore.core.offline_layout import (
    EVENTS_SCHEMAS,
    SORT_KEYS,
    event_files,
    events_relpath,
    read_events,
)
from pitstore.core.timeutil import to_us
from pitstore.landing.zone import write_landing
from pitstore.models.registry import list_models
from pitstore.synth.generate import GeneratorParams, generate

pytestmark = pytest.mark.spark

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 20
# A first (full) run and an incremental one, which publishes from the Spark state.
RUNS = [START + timedelta(days=d) for d in (4, 20)]
KNOWN_BY = RUNS[-1].date().isoformat()


def cli(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("PITSTORE_HOME", str(home))
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, spark: object) -> dict[str, Settings]:
    """The same landing zone transformed by each engine alone (two runs each)."""
    root = tmp_path_factory.mktemp("events-engines")
    params = GeneratorParams(accounts=40, merchants=10, days=DAYS, seed=11, start=START)
    write_landing(generate(params), root / "dbt" / "landing")
    shutil.copytree(root / "dbt" / "landing", root / "spark" / "landing")
    with pytest.MonkeyPatch.context() as mp:
        for engine in ("dbt", "spark"):
            for w in RUNS:
                args = ["transform", f"--engine={engine}", f"--watermark={w.isoformat()}"]
                cli(root / engine, mp, *args)
    return {e: Settings(pitstore_home=root / e) for e in ("dbt", "spark")}


def test_spark_publishes_the_dbt_engines_events(homes: dict[str, Settings]) -> None:
    spark_home, dbt_home = homes["spark"], homes["dbt"]
    assert not spark_home.warehouse.exists(), "the Spark home has no dbt warehouse"
    assert event_files(spark_home).runs == tuple(to_us(w) for w in RUNS)
    for dataset in EVENTS_SCHEMAS:
        for w in RUNS:
            rel = events_relpath(dataset, to_us(w))
            ours, theirs = spark_home.offline / rel, dbt_home.offline / rel
            assert ours.read_bytes() == theirs.read_bytes(), rel
        if dataset in ("transactions", "labels"):  # the generator lands no credit data
            assert sum(pq.read_metadata(p).num_rows for p in event_files(spark_home).files[dataset])


def test_spark_rerun_writes_the_same_bytes(
    homes: dict[str, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "again"
    shutil.copytree(homes["spark"].home, home)
    paths = [home / "offline" / events_relpath(d, to_us(RUNS[-1])) for d in EVENTS_SCHEMAS]
    before = [p.read_bytes() for p in paths]
    args = ["transform", "--engine=spark", f"--watermark={RUNS[-1].isoformat()}"]
    cli(home, monkeypatch, *args)
    assert [p.read_bytes() for p in paths] == before
    # A full refresh: one run holding every row, the other runs' events gone.
    cli(home, monkeypatch, *args, "--full-refresh")
    settings = Settings(pitstore_home=home)
    assert event_files(settings).runs == (to_us(RUNS[-1]),)
    for dataset in EVENTS_SCHEMAS:
        assert [p.name for p in (home / "offline" / "_events" / dataset).iterdir()] == [
            paths[0].name
        ]
        sort = [(k, "ascending") for k in SORT_KEYS[dataset]]
        full = read_events(settings, dataset)
        assert full.equals(read_events(homes["dbt"], dataset).sort_by(sort))


def test_spark_home_builds_the_same_frame_and_trains(
    homes: dict[str, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = {}
    for engine, settings in homes.items():
        out[engine] = tmp_path / engine
        args = ["--labels-known-by", KNOWN_BY, "--label-maturity-days", "7"]
        cli(settings.home, monkeypatch, "training-frame", "--out", str(out[engine]), *args)
    frame = (out["spark"] / "frame.parquet").read_bytes()
    assert frame == (out["dbt"] / "frame.parquet").read_bytes()
    assert pq.read_metadata(out["spark"] / "frame.parquet").num_rows > 0
    audits = [json.loads((out[e] / "audit.json").read_text()) for e in homes]
    assert audits[0] == audits[1]
    assert audits[0]["labels"]["by_status"]["fraud"] > 0

    spark_home = homes["spark"].home
    said = cli(spark_home, monkeypatch, "train", "--labels-known-by", KNOWN_BY, *args[2:])
    assert "not promoted" in said
    (model,) = list_models(homes["spark"])
    assert model["label_cutoff"].startswith(KNOWN_BY) and model["version"] in said
