"""The published events format on the dbt engine: the rows equal the warehouse's
deduplicated tables, one disjoint file per run, the same bytes when a run repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pitstore.core.config import Settings
from pitstore.core.offline_layout import (
    AFTER_KEY,
    EVENT_IDS,
    EVENTS_SCHEMAS,
    SORT_KEYS,
    event_files,
    events_relpath,
    read_events,
)
from pitstore.core.timeutil import to_us
from pitstore.landing.zone import write_landing
from pitstore.synth.generate import GeneratorParams, generate
from pitstore.training.labels import LabelError, LabelPolicy, fraud_requests
from pitstore.transform.dbt_engine import transform_dbt
from pitstore.transform.events import DBT_RELATIONS

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 20
RUNS = [START + timedelta(days=d) for d in (10, 15, 20)]


@pytest.fixture(scope="module")
def dbt_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(pitstore_home=tmp_path_factory.mktemp("events-dbt"))
    params = GeneratorParams(accounts=40, merchants=10, days=DAYS, seed=11, start=START)
    write_landing(generate(params), settings.landing)
    for w in RUNS:
        transform_dbt(settings, w)
    return settings


def warehouse_rows(settings: Settings, dataset: str, upto: datetime) -> pa.Table:
    schema = EVENTS_SCHEMAS[dataset]
    order = ", ".join(SORT_KEYS[dataset])
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        table = con.sql(
            f"select {', '.join(schema.names)} from {DBT_RELATIONS[dataset]} "
            f"where ingested_us <= {to_us(upto)} order by {order}"
        ).to_arrow_table()
    finally:
        con.close()
    return table.cast(schema)


def sorted_events(settings: Settings, dataset: str) -> pa.Table:
    table = read_events(settings, dataset)
    return table.sort_by([(k, "ascending") for k in SORT_KEYS[dataset]])


def test_published_events_equal_the_warehouse(dbt_home: Settings) -> None:
    found = event_files(dbt_home)
    assert found.runs == tuple(to_us(w) for w in RUNS)
    for dataset in EVENTS_SCHEMAS:
        published = sorted_events(dbt_home, dataset)
        if dataset in ("transactions", "labels"):  # the generator lands no credit data
            assert published.num_rows > 0
        assert published.equals(warehouse_rows(dbt_home, dataset, RUNS[-1]))
        # One file per run: the rows it was the first to see, disjoint from the others.
        previous = None
        for w, path in zip(RUNS, found.files[dataset], strict=True):
            assert path == dbt_home.offline / events_relpath(dataset, to_us(w))
            meta = pq.read_schema(path).metadata
            assert meta[AFTER_KEY] == (b"" if previous is None else str(to_us(previous)).encode())
            t = pq.read_table(path)
            ingested = pc.cast(t.column("ingested_at"), pa.int64())
            assert t.num_rows == 0 or pc.max(ingested).as_py() <= to_us(w)
            if previous is not None and t.num_rows:
                assert pc.min(ingested).as_py() > to_us(previous)
            sort = [(k, "ascending") for k in SORT_KEYS[dataset]]
            assert t.equals(t.sort_by(sort)), "a file is sorted by the format's keys"
            previous = w
        ids = published.column(EVENT_IDS[dataset])
        assert pc.count_distinct(ids).as_py() == len(ids)


def test_repeated_run_writes_the_same_bytes(dbt_home: Settings) -> None:
    paths = [dbt_home.offline / events_relpath(d, to_us(RUNS[1])) for d in EVENTS_SCHEMAS]
    before = [p.read_bytes() for p in paths]
    transform_dbt(dbt_home, RUNS[1])
    assert [p.read_bytes() for p in paths] == before
    assert not list(dbt_home.offline.glob("_events/*/.*")), "no temporary file left behind"


def test_training_reads_events_not_the_warehouse(dbt_home: Settings, tmp_path: Path) -> None:
    policy = LabelPolicy(RUNS[-1], maturity=timedelta(days=7))
    rows, audit = fraud_requests(dbt_home, policy)
    assert rows.num_rows == audit["labels"]["rows"] > 0
    # Without the warehouse the answer is the same: training never opens it.
    import shutil

    copy = Settings(pitstore_home=tmp_path / "copy")
    shutil.copytree(dbt_home.home, copy.home, ignore=shutil.ignore_patterns("warehouse.duckdb*"))
    rows2, audit2 = fraud_requests(copy, policy)
    assert rows2.equals(rows) and audit2 == audit
    # A run that completed but published nothing is named, in one line.
    (copy.offline / events_relpath("labels", to_us(RUNS[-1]))).unlink()
    with pytest.raises(LabelError, match="published no labels events"):
        fraud_requests(copy, policy)
    with pytest.raises(LabelError, match="no transform run has completed"):
        fraud_requests(Settings(pitstore_home=tmp_path / "empty"), policy)


def test_full_refresh_publishes_one_full_file(dbt_home: Settings, tmp_path: Path) -> None:
    import shutil

    copy = Settings(pitstore_home=tmp_path / "refresh")
    shutil.copytree(dbt_home.home, copy.home)
    transform_dbt(copy, RUNS[-1], full_refresh=True)
    found = event_files(copy)
    assert found.runs == (to_us(RUNS[-1]),)
    for dataset in EVENTS_SCHEMAS:
        assert [p.name for p in (copy.offline / "_events" / dataset).iterdir()] == [
            found.files[dataset][0].name
        ]
        assert sorted_events(copy, dataset).equals(sorted_events(dbt_home, dataset))
