"""Run the daily batch on the dbt engine and publish its rows to the offline store.

I/O lives here (the CLI's edge): validating the landing zone, invoking dbt
in-process, and exporting each view's new version file atomically. The
semantics live in the SQL rendered from the spec (``pitstore.render_sql``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.run_lock import run_lock
from pitstore.core.runs import (
    RunFailed,
    RunMarker,
    RunSummary,
    StoreError,
    TransformError,
    begin_run,
    check_run_order,
    file_entry,
    forget_runs,
    read_markers,
    write_marker,
)
from pitstore.core.spec import FEATURE_VIEWS, FeatureView
from pitstore.core.timeutil import stamp_us, to_us
from pitstore.landing import zone as landing
from pitstore.landing.schema import (
    APPLICATIONS_SCHEMA,
    CREDIT_OUTCOMES_SCHEMA,
    LABELS_SCHEMA,
    LEDGER_SCHEMA,
    TRANSACTIONS_SCHEMA,
    columns_of,
)
from pitstore.transform.codegen import mart_name
from pitstore.transform.events import publish_dbt_events

# The landing contract: a file whose columns differ is schema drift.
TRANSACTION_COLUMNS = columns_of(TRANSACTIONS_SCHEMA)
LABEL_COLUMNS = columns_of(LABELS_SCHEMA)
LEDGER_COLUMNS = columns_of(LEDGER_SCHEMA)
# Datasets a drifted file of stops the run (their rows are not quarantined one by
# one: a label or an application with unknown columns is not worth guessing at).
STRICT_COLUMNS = {
    "labels": LABEL_COLUMNS,
    "applications": columns_of(APPLICATIONS_SCHEMA),
    "credit_outcomes": columns_of(CREDIT_OUTCOMES_SCHEMA),
}
# Datasets whose drifted files are quarantined whole, the rest of the run going on.
EVENT_COLUMNS = {"transactions": TRANSACTION_COLUMNS, "ledger": LEDGER_COLUMNS}
# The dbt var listing each dataset's landing files.
FILE_VARS = {
    "transactions": "transaction_files",
    "ledger": "ledger_files",
    "labels": "label_files",
    "applications": "application_files",
    "credit_outcomes": "credit_outcome_files",
}


def schema_drift(path: Path, expected: dict[str, str]) -> str | None:
    """Describe how a landing file's schema differs from the contract, or None."""
    schema = pq.read_schema(path)
    actual = {f.name: str(f.type) for f in schema}
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    retyped = sorted(c for c in expected if c in actual and actual[c] != expected[c])
    if not (missing or extra or retyped):
        return None
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    if retyped:
        parts.append(", ".join(f"{c} is {actual[c]} not {expected[c]}" for c in retyped))
    return "; ".join(parts)


def files_ingested_after(paths: list[str], after_us: int) -> list[str]:
    """The landing files that may hold a row with ``ingested_at > after_us`` or null.

    Decided from each file's parquet footer statistics (max ``ingested_at`` and its
    null count), not from the partition name: a file without statistics is kept.
    """
    kept = []
    for path in paths:
        meta = pq.read_metadata(path)
        col = meta.schema.to_arrow_schema().get_field_index("ingested_at")
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics
            if (
                stats is None
                or not stats.has_min_max
                or stats.null_count is None
                or stats.null_count > 0
                or to_us(stats.max) > after_us
            ):
                kept.append(path)
                break
    return kept


def existing_runs(settings: Settings) -> list[int]:
    """Watermarks (µs, ascending) of the dbt runs that completed (their markers:
    ``pitstore.core.runs``). A run that crashed before its marker never counts as
    "the previous run"."""
    return sorted(w for w, m in read_markers(settings.offline).items() if m.engine == "dbt")


def discard_incomplete_runs(warehouse: Path, keep_us: list[int]) -> None:
    """Drop rows a crashed run left in the warehouse (created by no completed run).

    Otherwise a later run would compare against versions the offline store
    never published, and ``transform_runs`` would name a run that never
    completed. Rows of the run about to execute are replaced by it anyway.
    """
    if not warehouse.exists():
        return
    keep = ", ".join(str(k) for k in keep_us) or "-1"
    try:
        con = duckdb.connect(str(warehouse))
    except duckdb.Error as exc:
        raise StoreError(
            f"cannot open the warehouse {warehouse}: {first_line(exc)} (if it is damaged, "
            "move it away and rebuild with --full-refresh)"
        ) from exc
    try:
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        for view in FEATURE_VIEWS:
            if mart_name(view) in tables:
                con.execute(
                    f"delete from {mart_name(view)} "
                    f"where epoch_us(created_timestamp) not in ({keep})"
                )
        if "quarantine_events" in tables:
            con.execute(
                f"delete from quarantine_events "
                f"where epoch_us(first_seen_watermark) not in ({keep})"
            )
        if "transform_runs" in tables:
            con.execute(f"delete from transform_runs where watermark_us not in ({keep})")
    except duckdb.Error as exc:
        raise StoreError(
            f"the warehouse {warehouse} is unusable: {first_line(exc)} (if it is damaged, "
            "move it away and rebuild with --full-refresh)"
        ) from exc
    finally:
        con.close()


def first_line(exc: BaseException) -> str:
    """A library error's message without its trailing hints and stack."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_dbt(args: list[str], settings: Settings, write_json: bool = True) -> None:
    """``dbt <args>`` in-process (project parsed once: ``pitstore.dbt_invoke``)."""
    from pitstore.transform.dbt_invoke import DbtError, invoke

    try:
        invoke(args, settings, write_json=write_json)
    except DbtError as exc:
        raise RunFailed(str(exc)) from exc


def export_view(con: duckdb.DuckDBPyConnection, view: FeatureView, out_dir: Path, w_us: int) -> int:
    """Write the rows run ``W`` created as one parquet file, atomically.

    The file is written under a hidden temporary name and renamed into place,
    so readers (Feast, training) see either the old store or the new one. A
    failed write (a full disk) leaves no temporary behind.
    """
    final = out_dir / f"run-{stamp_us(w_us)}.parquet"
    tmp = out_dir / f".{final.name}.tmp"
    relation = con.sql(
        f"select * from {mart_name(view)} "
        f"where created_timestamp = make_timestamptz({w_us}::bigint) "
        "order by all"
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        relation.write_parquet(str(tmp), compression="zstd")
        os.replace(tmp, final)
    except (OSError, duckdb.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {final}: {first_line(exc)}") from exc
    return int(pq.read_metadata(final).num_rows)


def transform_dbt(
    settings: Settings, watermark: datetime, full_refresh: bool = False
) -> RunSummary:
    """The run at W on the dbt engine, under the home's run lock (``run_lock.py``)."""
    with run_lock(settings.home):
        return locked_transform_dbt(settings, watermark, full_refresh)


def locked_transform_dbt(settings: Settings, watermark: datetime, full_refresh: bool) -> RunSummary:
    started = time.perf_counter()
    w_us = to_us(watermark)
    # Before anything else: a killed run's files go, and the store is what the
    # markers say (pitstore.core.runs).
    markers, orphans = begin_run(settings.offline, settings.runs, "dbt", w_us, full_refresh)
    manifest = landing.validate_for_watermark(settings.landing, watermark)
    runs = sorted(markers)
    previous = check_run_order(w_us, runs)

    files: dict[str, list[str]] = {}
    drifted: list[str] = []
    for dataset, expected in EVENT_COLUMNS.items():
        files[dataset] = []
        for path in landing.partition_files(manifest, dataset, watermark):
            (drifted if schema_drift(path, expected) else files[dataset]).append(str(path))
    for dataset, expected in STRICT_COLUMNS.items():
        files[dataset] = [str(p) for p in landing.partition_files(manifest, dataset, watermark)]
        bad = [p for p in files[dataset] if schema_drift(Path(p), expected)]
        if bad:
            raise TransformError(f"{dataset} files with schema drift: {bad}")
    if not any(files.values()) and not drifted:
        # Any dataset will do: a run over ledger history before the card feed
        # starts is a real run (credit features must be known at application time).
        raise TransformError(
            f"the landing zone holds no partition at or before {watermark.isoformat()}"
        )
    if previous is not None and not full_refresh:
        # An incremental run only reads rows ingested after the previous run
        # (dedupe and quarantine are incremental tables): skip files that hold none.
        for dataset, paths in files.items():
            files[dataset] = files_ingested_after(paths, previous)

    if full_refresh:
        # History is rebuilt as one version at W: earlier runs no longer exist.
        forget_runs(settings.offline, settings.runs)
    settings.home.mkdir(parents=True, exist_ok=True)
    dbt_vars = {
        "watermark_us": w_us,
        "previous_watermark_us": -1 if previous is None else previous,
        **{FILE_VARS[d]: paths for d, paths in files.items()},
        "drifted_files": drifted,
    }
    discard_incomplete_runs(settings.warehouse, [*runs, w_us])
    args = ["run", "--vars", json.dumps(dbt_vars)]
    if full_refresh:
        args.append("--full-refresh")
    run_dbt(args, settings, write_json=False)

    summary = RunSummary(
        engine="dbt",
        watermark=watermark.isoformat(),
        previous_watermark=stamp_us(previous) if previous is not None else None,
        drifted_files=[Path(p).name for p in drifted],
        orphans_removed=orphans,
    )
    published: list[Path] = []
    try:
        con = duckdb.connect(str(settings.warehouse), read_only=True)
    except duckdb.Error as exc:
        raise StoreError(f"cannot open the warehouse: {first_line(exc)}") from exc
    try:
        for view in FEATURE_VIEWS:
            name = view.name
            out_dir = settings.offline_view_dir(name)
            summary.rows_appended[name] = export_view(con, view, out_dir, w_us)
            published.append(out_dir / f"run-{stamp_us(w_us)}.parquet")
            key = view.entity.join_key
            summary.rows_restated[name] = con.execute(
                f"select count(*) from {mart_name(view)} n where n.created_timestamp = "
                f"make_timestamptz({w_us}::bigint) and exists (select 1 from "
                f"{mart_name(view)} o where o.{key} = n.{key} and "
                "o.event_timestamp = n.event_timestamp and "
                "o.created_timestamp < n.created_timestamp)"
            ).fetchall()[0][0]
            summary.rows_total[name] = con.execute(
                f"select count(*) from {mart_name(view)}"
            ).fetchall()[0][0]
        for reason, n in con.execute(
            "select reason, count(*) from quarantine_events where first_seen_watermark = "
            f"make_timestamptz({w_us}::bigint) group by reason order by reason"
        ).fetchall():
            summary.quarantined_new[reason] = n
        summary.quarantined_total = con.execute(
            "select count(*) from quarantine_events"
        ).fetchall()[0][0]
    finally:
        con.close()
    publish_dbt_events(settings, w_us, previous, full_refresh)  # before the summary marks it done
    summary.seconds = round(time.perf_counter() - started, 3)
    # The marker last: only a run whose every file is in place counts as a run.
    write_marker(
        settings.offline,
        RunMarker(
            engine="dbt",
            watermark_us=w_us,
            files={p.relative_to(settings.offline).as_posix(): file_entry(p) for p in published},
            summary=asdict(summary),
        ),
    )
    return summary
