"""The Spark engine: every feature view from the same spec as dbt, on any Spark master.

    pitstore transform --engine spark --watermark 2026-01-10T00:00:00+00:00 [--master URL]
    spark-submit pitstore/transform/spark/job.py --watermark 2026-01-10T00:00:00Z --home s3a://bucket/pit

Semantics are those of the dbt engine (DESIGN.md; ``transforms/dbt``): staging,
validation and dedupe are a Spark SQL mirror of the dbt staging models
(``staging.py``), and each view's rows come from ``render_view_sql(view, rel,
SPARK)``, the same renderer that generates the dbt marts (run CTE by CTE:
``views.py``). Only the state differs:

* stored rows = the view's offline parquet files (``<offline>/<view>/run-*.parquet``);
* the previous run = the newest watermark < W among the completed-run markers
  ``<offline>/_runs/run-*.json`` (``pitstore.core.runs``, the format both engines
  share), which each successful run writes *last* (a run that crashed halfway has
  no marker, so the next run recomputes from the run before it: more work, same
  rows); the marker lists the view and state files the run published;
* on a local home a run holds the home's run lock (``pitstore.core.run_lock``,
  the dbt engine's too) and first moves out whatever no marker lists (a killed
  run's files). A remote home (``s3a://``) has no lock: its scheduler must run
  one job at a time, and a killed run's files there are only overwritten;
* dedupe is incremental like dbt's tables: the deduplicated events persist as
  parquet under ``<offline>/_state/`` (one file per run, ``dedupe.py``), and a run
  after P parses only the landing files that may hold rows ingested after P; the
  quarantine total is P's (from its marker) plus the rows new at W. A run without
  a usable state (first, full refresh, older store) reads every landing file.

Every output file is written by Spark to ``<view>/.tmp-<W>/`` and moved to
``<view>/run-<W>.parquet`` (``os.replace`` locally, Hadoop ``FileSystem.rename``
elsewhere), so readers see the old store or the new one, never half a file.
The job has no Python UDFs: executors need no pitstore code, only the driver does.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # spark-submit pitstore/transform/spark/job.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from pitstore.core.offline_layout import EVENT_IDS  # noqa: E402
from pitstore.core.run_lock import run_lock  # noqa: E402
from pitstore.core.runs import (  # noqa: E402
    MARKERS,  # noqa: E402
    RunSummary,
    TransformError,
    check_run_order,
    forget_runs,
)
from pitstore.core.spec import FEATURE_VIEWS, FeatureView  # noqa: E402
from pitstore.core.timeutil import from_us, parse_utc, stamp_us, to_us  # noqa: E402
from pitstore.landing import zone as landing  # noqa: E402
from pitstore.transform.dbt_engine import EVENT_COLUMNS, STRICT_COLUMNS  # noqa: E402
from pitstore.transform.render_sql import us  # noqa: E402
from pitstore.transform.spark import dedupe, landing_io, staging, staging_credit  # noqa: E402
from pitstore.transform.spark.bookkeeping import publish_marker, start_run  # noqa: E402
from pitstore.transform.spark.quarantine import count_quarantine  # noqa: E402
from pitstore.transform.spark.storage import Store, is_local, join, local_path  # noqa: E402
from pitstore.transform.spark.views import run_view  # noqa: E402

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pitstore.core.config import Settings

DEFAULT_MASTER = "local[*]"
# Session settings the semantics depend on (set on every session the job uses).
SPARK_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.ansi.enabled": "true",
}
# A run that reads a persisted state parses one day of landing files: its plans
# are dozens of small joins and aggregates over a few thousand rows, where Spark's
# fixed costs are the run. Adaptive execution submits every query stage (and each
# broadcast) as a job of its own, and every shuffle is split into several tasks;
# without them each query is one job with one task per stage.
SMALL_RUN_CONF = {
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.autoBroadcastJoinThreshold": "-1",
    "spark.sql.shuffle.partitions": "1",
    # Whole-stage code generation compiles (and the JVM then JIT-compiles) a few
    # hundred classes per run, each costlier than interpreting its few thousand rows.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}
# ...but only while the history a day's windows read is small. Measured at 5,000
# accounts x 40 days (~440k deduplicated rows), from the same store state: an
# incremental day took 34 s without code generation and 18.5 s with it. At 500
# accounts x 60 days (~66k) turning it off was the largest single saving of the
# small-run settings (which together took a day from 13.6 to 9.0 s).
CODEGEN_MIN_STATE_ROWS = 150_000
CODEGEN_KEYS = ("spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode")


# Each landing dataset's staging SQL (the dbt staging models' mirror).
STAGING = {
    "transactions": staging.transactions_sql,
    "labels": staging.labels_sql,
    "ledger": staging_credit.ledger_sql,
    "applications": staging_credit.applications_sql,
    "credit_outcomes": staging_credit.credit_outcomes_sql,
}
# The time column whose smallest new value bounds the views' horizons.
FIRSTS = {"transactions": "event_us", "labels": "label_us", "ledger": "event_us"}


def small_run_conf(state_rows: int | None) -> dict[str, str]:
    """SMALL_RUN_CONF for an incremental run over ``state_rows`` deduplicated rows."""
    if state_rows is not None and state_rows >= CODEGEN_MIN_STATE_ROWS:
        return {k: v for k, v in SMALL_RUN_CONF.items() if k not in CODEGEN_KEYS}
    return dict(SMALL_RUN_CONF)


@dataclass(frozen=True)
class Layout:
    """Where a run reads and writes: local paths or any Hadoop URI."""

    landing: str
    offline: str
    runs: str

    @classmethod
    def from_home(cls, home: str, landing_uri: str | None = None) -> Layout:
        home = home.rstrip("/")
        if is_local(home):
            home = str(local_path(home).resolve())
        return cls(landing_uri or join(home, "landing"), join(home, "offline"), join(home, "runs"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        return cls(str(settings.landing), str(settings.offline), str(settings.runs))

    def view_dir(self, view_name: str) -> str:
        return join(self.offline, view_name)

    @property
    def markers(self) -> str:
        return join(self.offline, MARKERS)

    @property
    def local_offline(self) -> Path | None:
        """The offline store's local path (None on a remote store)."""
        return local_path(self.offline) if is_local(self.offline) else None


def spark_session(master: str | None = DEFAULT_MASTER) -> SparkSession:
    """The session for a run; ``master=None`` leaves it to spark-submit."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("pitstore-transform")
    if master:
        builder = builder.master(master)
    if (master or "").startswith("local"):
        # One machine: a few shuffle partitions, not the cluster default of 200
        # (the runs' plans have dozens of small shuffles; 200 tasks each dominate).
        builder = builder.config("spark.sql.shuffle.partitions", str(os.cpu_count() or 2))
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    # No stage progress bars: they flood CI logs and non-TTY output.
    session = builder.config("spark.ui.showConsoleProgress", "false").getOrCreate()
    from pitstore.core.config import get_settings

    session.sparkContext.setLogLevel(get_settings().spark_log_level)
    return session


def transform_spark(
    settings: Settings,
    watermark: datetime,
    master: str | None = None,
    full_refresh: bool = False,
    spark: SparkSession | None = None,
) -> RunSummary:
    """``pitstore transform --engine spark``: the run at W, into ``settings``' home."""
    session = spark or spark_session(master or DEFAULT_MASTER)
    return run_job(session, Layout.from_settings(settings), watermark, full_refresh)


# --- Runs ---------------------------------------------------------------------


@contextlib.contextmanager
def session_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """Set ``conf`` on the session for the block, then put the previous values back."""
    before: dict[str, str | None] = {k: spark.conf.get(k, None) for k in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def horizon_bound(prev_us: int, firsts: dict[str, int | None], view: FeatureView) -> int:
    """A lower bound of a view's ``horizon`` (render_sql): the previous watermark, pulled
    back to the earliest event of its source, or label, among the rows new at W (every
    arrival is one of them; a label whose transaction is unknown only lowers the bound)."""
    lows = [prev_us, firsts[view.source]] + ([firsts["labels"]] if view.uses_labels else [])
    return min(x for x in lows if x is not None)


def recent_events(spark: SparkSession, source: str, horizon_us: int) -> None:
    """Replace ``pit_<source>`` by its events that any view can read, computed once.

    Every view reads only events at or after its horizon minus its longest window and
    one cadence (render_sql's ``view_events``); ``horizon_us`` is at or below every
    view's horizon. A new label whose transaction is older changes no value (it counts
    only at boundaries at or after its label_ts, past that event's windows), so it may
    drop out of ``arrivals`` too. The views then read one in-memory copy of the few
    columns they use instead of each scanning the whole state several times.
    """
    views = [v for v in FEATURE_VIEWS if v.source == source]
    if not views:
        return
    lo = horizon_us - max(us(v.max_window) + us(v.cadence) for v in views)
    columns = {EVENT_IDS[source], "event_us", "ingested_us"}
    for view in views:
        columns.add(view.entity.join_key)
        columns.update(f.aggregation.input for f in view.features if f.aggregation.input)
    table = f"pit_{source}"
    recent = spark.table(table).where(f"event_us >= {lo}").select(*sorted(columns))
    recent.localCheckpoint(eager=True).createOrReplaceTempView(table)


def run_job(
    spark: SparkSession, layout: Layout, watermark: datetime, full_refresh: bool = False
) -> RunSummary:
    """Compute and publish every view's rows for the run at ``watermark``."""
    local = layout.local_offline
    with run_lock(local.parent) if local is not None else contextlib.nullcontext():
        return locked_run_job(spark, layout, watermark, full_refresh)


def locked_run_job(
    spark: SparkSession, layout: Layout, watermark: datetime, full_refresh: bool
) -> RunSummary:
    started = time.perf_counter()
    local = layout.local_offline
    for key, value in SPARK_CONF.items():
        spark.conf.set(key, value)
    store = Store(spark)
    if watermark.tzinfo is None or watermark.utcoffset() is None:
        raise TransformError(f"watermark {watermark.isoformat()} is naive: pass a UTC-aware time")
    watermark = watermark.astimezone(UTC)
    w_us = to_us(watermark)
    markers, orphans = start_run(store, layout, w_us, full_refresh)
    manifest = landing_io.validated_manifest(spark, store, layout.landing, watermark)
    previous = check_run_order(w_us, list(markers))
    prev_us = -1 if previous is None else previous
    w_stamp = stamp_us(w_us)
    # The deduplicated state from base(P) to P, when P left one (see dedupe.py).
    base = dedupe.usable_base(markers, previous)
    state_runs = (
        None if base is None else [stamp_us(m) for m in sorted(markers) if base <= m <= prev_us]
    )

    uris: dict[str, list[str]] = {}
    drifted: list[str] = []
    for dataset, expected in EVENT_COLUMNS.items():
        uris[dataset] = []
        for uri in landing_io.partition_uris(layout.landing, manifest, dataset, watermark):
            (drifted if landing_io.drift(spark, uri, expected) else uris[dataset]).append(uri)
    for dataset, expected in STRICT_COLUMNS.items():
        uris[dataset] = landing_io.partition_uris(layout.landing, manifest, dataset, watermark)
        bad = [u for u in uris[dataset] if landing_io.drift(spark, u, expected)]
        if bad:
            raise TransformError(f"{dataset} files with schema drift: {bad}")
    if not any(uris.values()) and not drifted:
        # Any dataset will do: see the dbt engine.
        raise TransformError(
            f"the landing zone holds no partition at or before {watermark.isoformat()}"
        )
    if full_refresh and local is not None:
        # History is rebuilt as one version at W: earlier runs no longer exist.
        forget_runs(local, local_path(layout.runs))

    if state_runs is not None:
        assert previous is not None
        prev_day = from_us(previous).date().isoformat()
        uris = {d: dedupe.files_since(u, previous, prev_day) for d, u in uris.items()}
    run_conf: dict[str, str] = {}
    if state_runs is not None:
        run_conf = small_run_conf(
            dedupe.state_rows(store, layout.offline, "transactions", state_runs)
        )
    with session_conf(spark, run_conf):
        staged = []
        for dataset, stage in STAGING.items():
            columns = {**EVENT_COLUMNS, **STRICT_COLUMNS}[dataset]
            landing_io.read_raw(spark, uris[dataset], columns).createOrReplaceTempView(
                f"pit_raw_{dataset}"
            )
            # Staged rows are cached and filled by the quarantine count, their first use,
            # so the landing files are parsed once. The views then read the deduplicated
            # events from the state files just written (dedupe.py), not through the
            # staging plan: with it underneath every reference (the views read them
            # concurrently, several times each) Catalyst spent tens of seconds planning.
            df = spark.sql(stage(f"pit_raw_{dataset}")).persist()
            df.createOrReplaceTempView(dedupe.DATASETS[dataset][0])
            staged.append(df)

        summary = RunSummary(
            engine="spark",
            watermark=watermark.isoformat(),
            previous_watermark=stamp_us(previous) if previous is not None else None,
            drifted_files=[u.rsplit("/", 1)[-1] for u in drifted],
            orphans_removed=orphans,
        )
        try:
            previous_total = (
                None if base is None else int(markers[prev_us].summary["quarantined_total"])
            )
            count_quarantine(spark, drifted, w_us, previous, summary, previous_total)
            # The earliest event (label) among the rows new at W bounds every view's
            # horizon: passed as a literal, it prunes the scans of the state and store.
            firsts: dict[str, int | None] = {}
            for name in dedupe.DATASETS:
                rows, new_file = dedupe.deduped(
                    spark, store, layout.offline, name, w_us, w_stamp, state_runs, previous
                )
                rows.createOrReplaceTempView(f"pit_{name}")
                if name in FIRSTS:
                    firsts[name] = dedupe.column_min(spark, new_file, FIRSTS[name])
            if state_runs is not None:
                for source in ("transactions", "ledger"):
                    bounds = [
                        horizon_bound(prev_us, firsts, v)
                        for v in FEATURE_VIEWS
                        if v.source == source
                    ]
                    if bounds:
                        recent_events(spark, source, min(bounds))
            for df in staged:
                df.unpersist()
            # The views are independent: submitting them together lets Spark overlap
            # one view's planning and small stages with another's.
            with ThreadPoolExecutor(max_workers=len(FEATURE_VIEWS)) as pool:
                counts = list(
                    pool.map(
                        lambda v: run_view(
                            spark,
                            store,
                            layout.view_dir(v.name),
                            v,
                            w_us,
                            prev_us,
                            w_stamp,
                            full_refresh,
                            horizon_bound(prev_us, firsts, v),
                        ),
                        FEATURE_VIEWS,
                    )
                )
            for view, (appended, restated, total) in zip(FEATURE_VIEWS, counts, strict=True):
                summary.rows_appended[view.name] = appended
                summary.rows_restated[view.name] = restated
                summary.rows_total[view.name] = total
        finally:
            for df in staged:
                df.unpersist()

    if full_refresh:
        if local is None:  # a local store was already cleared by forget_runs
            for name in store.list_names(layout.markers):
                store.delete(join(layout.markers, name))
        # Earlier runs' published events too (forget_runs leaves _events alone).
        dedupe.drop_other_runs(store, layout.offline, w_stamp)
    summary.seconds = round(time.perf_counter() - started, 3)
    # The marker last: only a run whose every file is in place counts as a run.
    publish_marker(store, layout, w_us, summary, {"state_base_us": w_us if base is None else base})
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spark-submit pitstore/transform/spark/job.py",
        description="pitstore Spark engine: one transform run at watermark W.",
    )
    parser.add_argument("--watermark", "-w", required=True, help="ISO-8601 with offset")
    parser.add_argument(
        "--home", required=True, help="PITSTORE_HOME: a local path or Hadoop URI (s3a://...)"
    )
    parser.add_argument("--landing", help="landing zone URI (default HOME/landing)")
    parser.add_argument(
        "--master", help="Spark master (default: spark-submit's, else local[*])", default=None
    )
    parser.add_argument("--full-refresh", action="store_true")
    args = parser.parse_args(argv)
    try:
        watermark = parse_utc(args.watermark)
    except ValueError as exc:
        parser.error(str(exc))
    spark = spark_session(args.master)
    try:
        summary = run_job(
            spark, Layout.from_home(args.home, args.landing), watermark, args.full_refresh
        )
    except landing.LandingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TransformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(summary.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
