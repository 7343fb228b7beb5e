"""The deduplicated events a Spark run reads: a persisted state plus what arrived since.

dbt keeps ``int_*__deduped`` as incremental tables; the Spark engine keeps the
same rows as parquet under ``<offline>/_state/<dataset>/run-<W>.parquet``, one
file per run: the ids that run was the first to see (copies ingested in
``(previous W, W]``, minus ids already known), or, for a run that had no usable
state (a first run, a full refresh, a store written before the state existed),
every deduplicated row known at ``W``. That run is the state's *base*; each
run's marker (``pitstore.core.runs``) lists its state files and records its
base, and a run at W whose previous run is P reads the files of the completed
runs from base(P) to P, plus the landing files that may
hold rows ingested after P (``files_ingested_after``), never the whole landing
history again.

Files are written under ``.tmp-<W>/`` and renamed into place; only runs with a
marker are ever read, so a crashed run's file is ignored (and, on a local store,
moved out by the next run), and a re-run of W rewrites the same rows (its
previous run, hence its input, is the same).

The same rows are published in the engine-neutral events format
(``pitstore.core.offline_layout``) as soon as a state file is in place, before
the views and the marker: the rows of this run's file ingested after P (a base
run's file also holds older rows), converted by ``publish_events``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pitstore.core.offline_layout import EVENT_IDS, EVENTS, UTC_US, events_relpath
from pitstore.core.runs import STATE, RunMarker
from pitstore.transform import events
from pitstore.transform.spark import staging, staging_credit
from pitstore.transform.spark.storage import Store, is_local, join, local_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DATASETS = {
    "transactions": ("pit_stg_transactions", staging.DEDUPED_TRANSACTION_COLUMNS),
    "labels": ("pit_stg_labels", staging.DEDUPED_LABEL_COLUMNS),
    "ledger": ("pit_stg_ledger", staging_credit.DEDUPED_LEDGER_COLUMNS),
    "applications": ("pit_stg_applications", staging_credit.DEDUPED_APPLICATION_COLUMNS),
    "credit_outcomes": ("pit_stg_credit_outcomes", staging_credit.DEDUPED_CREDIT_OUTCOME_COLUMNS),
}
# The column each published events file gets from a microsecond column of the state.
EVENT_TIMES = {
    "transactions": ("event_ts", "event_us"),
    "ledger": ("event_ts", "event_us"),
    "applications": ("application_ts", "application_us"),
}


def state_dir(offline: str, dataset: str) -> str:
    return join(offline, STATE, dataset)


def usable_base(markers: dict[int, RunMarker], previous: int | None) -> int | None:
    """base(P) when the run can read the state from P on, else None."""
    marker = None if previous is None else markers.get(previous)
    if marker is None or "state_base_us" not in marker.engine_state:
        return None
    # A store written before a dataset had a state (the credit datasets came later)
    # is rebuilt once from the landing zone.
    if any(not any(f.startswith(f"{STATE}/{d}/") for f in marker.files) for d in DATASETS):
        return None
    return int(marker.engine_state["state_base_us"])


def files_since(uris: list[str], previous: int, prev_day: str) -> list[str]:
    """Landing files that may hold a row the run at W sees and P did not: a row
    ingested after P (or with no ingested_at: footer statistics decide), or any row
    of a partition P did not read. Remote files are all kept (a superset is correct)."""
    from pitstore.transform.dbt_engine import files_ingested_after

    if not all(is_local(u) for u in uris):
        return uris
    paths = [str(local_path(u)) for u in uris]
    after = set(files_ingested_after(paths, previous))
    return [
        u
        for u, p in zip(uris, paths, strict=True)
        if p in after or u.rsplit("ingest_date=", 1)[-1][:10] > prev_day
    ]


def deduped(
    spark: SparkSession,
    store: Store,
    offline: str,
    dataset: str,
    w_us: int,
    w_stamp: str,
    state_runs: list[str] | None,
    previous: int | None,
) -> tuple[DataFrame, str]:
    """Write this run's state file for ``dataset``; return every deduplicated row at W
    and the file's URI (the rows new at W).

    ``state_runs``: stamps of the runs whose files hold the state at the previous
    run (None: no usable state, this run's file is the full set).
    """
    staged, columns = DATASETS[dataset]
    key = EVENT_IDS[dataset]
    folder = state_dir(offline, dataset)
    if state_runs is None:
        new = spark.sql(staging.deduped_sql(staged, columns, w_us, key=key))
        state = None
    else:
        assert previous is not None
        new = spark.sql(staging.deduped_sql(staged, columns, w_us, after_us=previous, key=key))
        files = [join(folder, f"run-{s}.parquet") for s in state_runs]
        # The schema is this run's own (the state files were written with it):
        # no footer-reading job to infer it.
        state = spark.read.schema(nullable(new.schema)).parquet(*files) if files else None
        if state is not None:
            # The ids of the few new rows the state already holds, found by probing a
            # hash of the new ids with the state's (no sort of the whole state).
            from pyspark.sql import functions as F

            ids = F.broadcast(new.select(key))
            known = state.select(key).join(ids, key, "left_semi")
            new = new.join(known, key, "left_anti")
    new = new.select(*[c.strip() for c in columns.split(",")])
    schema = nullable(new.schema)
    tmp = join(folder, f".tmp-{w_stamp}")
    store.delete(tmp)
    new.repartition(1).write.mode("overwrite").option("compression", "zstd").parquet(tmp)
    mine = join(folder, f"run-{w_stamp}.parquet")
    store.replace(single_part(store, tmp), mine)
    store.delete(tmp)
    publish_events(spark, store, offline, dataset, mine, schema, w_us, previous)
    # The written file is the checkpoint: the views read it, not the lineage above
    # (no recomputation, no in-memory checkpoint job, and a plan of one scan).
    new = spark.read.schema(schema).parquet(mine)
    return (new if state is None else state.unionByName(new)), mine


def publish_events(
    spark: SparkSession,
    store: Store,
    offline: str,
    dataset: str,
    state_file: str,
    schema: Any,
    w_us: int,
    previous: int | None,
) -> int:
    """Publish the rows run W learned of, from its state file; return how many.

    Read on the driver: the file holds one run's arrivals (a base run's, every row),
    and the format's bytes are pyarrow's (``events.encode``), as the dbt engine's.
    """
    import pyarrow.compute as pc

    if is_local(state_file):
        import pyarrow.parquet as pq

        table = pq.read_table(local_path(state_file))
    else:
        table = spark.read.schema(schema).parquet(state_file).toArrow()
    if previous is not None:
        table = table.filter(pc.greater(table.column("ingested_us"), previous))
    if dataset in EVENT_TIMES:
        ts, micros = EVENT_TIMES[dataset]
        table = table.append_column(ts, table.column(micros).cast(UTC_US))
    data = events.encode(dataset, table, w_us, previous)
    store.write_bytes(join(offline, events_relpath(dataset, w_us)), data)
    return table.num_rows


def state_rows(store: Store, offline: str, dataset: str, state_runs: list[str]) -> int | None:
    """Rows in the state files of ``state_runs`` from their footers (None: not local)."""
    folder = state_dir(offline, dataset)
    if not is_local(folder):
        return None
    import pyarrow.parquet as pq

    return sum(
        pq.read_metadata(local_path(join(folder, f"run-{s}.parquet"))).num_rows for s in state_runs
    )


def nullable(schema: Any) -> Any:
    """``schema`` with every field nullable, as Spark reads any parquet file."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, f.dataType, True) for f in schema])


def column_min(spark: SparkSession, uri: str, column: str) -> int | None:
    """The smallest value of an integer column of one file (None: no rows): from the
    footer's statistics locally, else one small aggregate."""
    if is_local(uri):
        import pyarrow.parquet as pq

        meta = pq.read_metadata(local_path(uri))
        if meta.num_rows == 0:
            return None
        idx = meta.schema.to_arrow_schema().get_field_index(column)
        lows = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(idx).statistics
            if meta.row_group(i).num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:
                break
            lows.append(int(stats.min))
        else:
            return min(lows) if lows else None
    row = spark.read.parquet(uri).agg({column: "min"}).collect()[0]
    return None if row[0] is None else int(row[0])


def single_part(store: Store, tmp_dir: str) -> str:
    from pitstore.core.runs import TransformError

    names = store.list_names(tmp_dir)
    parts = [n for n in names if n.startswith("part-") and n.endswith(".parquet")]
    if len(parts) != 1:
        raise TransformError(f"expected one parquet part in {tmp_dir}, found {parts}")
    return join(tmp_dir, parts[0])


def drop_other_runs(store: Store, offline: str, keep_stamp: str) -> None:
    """After a full refresh: the state, and the published events, are this run's files alone."""
    for dataset in DATASETS:
        for folder in (state_dir(offline, dataset), join(offline, EVENTS, dataset)):
            for name in store.list_names(folder):
                if name != f"run-{keep_stamp}.parquet":
                    store.delete(join(folder, name))
