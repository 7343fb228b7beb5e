"""Run the daily batch on the dbt engine and publish its rows to the offline store.

I/O lives here (the CLI's edge): validating the landing zone, invoking dbt
in-process, and exporting each view's new version file atomically. The
semantics live in the SQL rendered from the spec (``pitstore.render_sql``).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.runs import RunSummary, TransformError, check_run_order
from pitstore.core.spec import FEATURE_VIEWS, FeatureView
from pitstore.core.timeutil import from_us, stamp, to_us
from pitstore.landing import zone as landing
from pitstore.landing.schema import LABELS_SCHEMA, TRANSACTIONS_SCHEMA, columns_of
from pitstore.transform.codegen import mart_name
from pitstore.transform.events import publish_dbt_events

# The landing contract: a file whose columns differ is schema drift.
TRANSACTION_COLUMNS = columns_of(TRANSACTIONS_SCHEMA)
LABEL_COLUMNS = columns_of(LABELS_SCHEMA)


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
    """Watermarks (µs) of the dbt runs that completed.

    A run is complete once its summary (``runs/dbt-<W>.json``) exists: it is
    written last, after every view's parquet file was published. A run that
    crashed before that never counts as "the previous run".
    """
    done = []
    for path in sorted(settings.runs.glob("dbt-*.json")):
        done.append(to_us(datetime.fromisoformat(json.loads(path.read_text())["watermark"])))
    return done


def discard_incomplete_runs(warehouse: Path, keep_us: list[int]) -> None:
    """Drop rows a crashed run left in the warehouse (created by no completed run).

    Otherwise a later run would compare against versions the offline store
    never published. Rows of the run about to execute are replaced by it anyway.
    """
    if not warehouse.exists():
        return
    keep = ", ".join(str(k) for k in keep_us) or "-1"
    con = duckdb.connect(str(warehouse))
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
    finally:
        con.close()


def run_dbt(args: list[str], settings: Settings, write_json: bool = True) -> None:
    """``dbt <args>`` in-process (project parsed once: ``pitstore.dbt_invoke``)."""
    from pitstore.transform.dbt_invoke import DbtError, invoke

    try:
        invoke(args, settings, write_json=write_json)
    except DbtError as exc:
        raise TransformError(str(exc)) from exc


def export_view(con: duckdb.DuckDBPyConnection, view: FeatureView, out_dir: Path, w_us: int) -> int:
    """Write the rows run ``W`` created as one parquet file, atomically.

    The file is written under a hidden temporary name and renamed into place,
    so readers (Feast, training) see either the old store or the new one.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"run-{stamp_us(w_us)}.parquet"
    tmp = out_dir / f".{final.name}.tmp"
    relation = con.sql(
        f"select * from {mart_name(view)} "
        f"where created_timestamp = make_timestamptz({w_us}::bigint) "
        "order by all"
    )
    relation.write_parquet(str(tmp), compression="zstd")
    os.replace(tmp, final)
    return int(pq.read_metadata(final).num_rows)


def stamp_us(w_us: int) -> str:
    return stamp(from_us(w_us))


def transform_dbt(
    settings: Settings, watermark: datetime, full_refresh: bool = False
) -> RunSummary:
    import time

    started = time.perf_counter()
    manifest = landing.validate_for_watermark(settings.landing, watermark)
    w_us = to_us(watermark)
    if full_refresh:
        # History is rebuilt as one version at W: earlier runs no longer exist.
        for old in settings.runs.glob("dbt-*.json"):
            old.unlink()
    runs = existing_runs(settings)
    previous = check_run_order(w_us, runs)

    tx_files: list[str] = []
    drifted: list[str] = []
    for path in landing.partition_files(manifest, "transactions", watermark):
        (drifted if schema_drift(path, TRANSACTION_COLUMNS) else tx_files).append(str(path))
    label_files = [str(p) for p in landing.partition_files(manifest, "labels", watermark)]
    bad_labels = [p for p in label_files if schema_drift(Path(p), LABEL_COLUMNS)]
    if bad_labels:
        raise TransformError(f"label files with schema drift: {bad_labels}")
    if not tx_files:
        raise TransformError(
            f"the landing zone holds no transaction partition at or before {watermark.isoformat()}"
        )
    if previous is not None and not full_refresh:
        # An incremental run only reads rows ingested after the previous run
        # (dedupe and quarantine are incremental tables): skip files that hold none.
        tx_files = files_ingested_after(tx_files, previous) or tx_files[-1:]
        label_files = files_ingested_after(label_files, previous)

    settings.home.mkdir(parents=True, exist_ok=True)
    dbt_vars = {
        "watermark_us": w_us,
        "previous_watermark_us": -1 if previous is None else previous,
        "transaction_files": tx_files,
        "label_files": label_files,
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
    )
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        for view in FEATURE_VIEWS:
            name = view.name
            out_dir = settings.offline_view_dir(name)
            if full_refresh and out_dir.exists():
                for old in out_dir.glob("*.parquet"):
                    old.unlink()
            summary.rows_appended[name] = export_view(con, view, out_dir, w_us)
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
    settings.runs.mkdir(parents=True, exist_ok=True)
    out = settings.runs / f"dbt-{stamp(watermark)}.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(summary.to_json())
    os.replace(tmp, out)
    return summary
