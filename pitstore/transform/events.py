"""Publishing a run's deduplicated events (the format: ``pitstore.core.offline_layout``).

Both engines call this before they record the run as complete, so a completed
run always has its events. :func:`encode` is the one writer of the format's
bytes: it selects and casts the columns to the format's schema, sorts by its
keys and writes parquet with fixed options, so the same rows give the same
bytes from either engine, and a run repeated at the same W rewrites its file
unchanged (its previous run, hence its rows, are the same).

The dbt engine publishes from its warehouse (:func:`publish_dbt_events`); the
Spark engine from its deduplicated state files (``spark/dedupe.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.offline_layout import (
    EVENTS,
    EVENTS_SCHEMAS,
    SORT_KEYS,
    events_metadata,
    events_relpath,
)

# The dbt models holding the deduplicated rows (their columns carry the format's names).
DBT_RELATIONS = {
    "transactions": "int_transactions__deduped",
    "labels": "int_fraud_labels__deduped",
    "ledger": "int_ledger__deduped",
    "applications": "int_applications__deduped",
    "credit_outcomes": "int_credit_outcomes__deduped",
}


def encode(dataset: str, table: pa.Table, w_us: int, after_us: int | None) -> bytes:
    """The events file of run ``w_us`` (continuing ``after_us``) holding ``table``'s rows."""
    schema = EVENTS_SCHEMAS[dataset]
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise ValueError(f"{dataset} events lack columns {missing}")
    # Casting also renames a timestamp's zone (DuckDB's session zone) to UTC: same instants.
    rows = table.select(schema.names).cast(schema)
    rows = rows.sort_by([(k, "ascending") for k in SORT_KEYS[dataset]])
    rows = rows.replace_schema_metadata(events_metadata(dataset, w_us, after_us))
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, compression="zstd", row_group_size=1 << 20)
    return sink.getvalue().to_pybytes()


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` under a hidden temporary name first, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def drop_other_runs(offline: Path, w_us: int) -> None:
    """After a full refresh the store is one run: remove every other run's events."""
    for dataset in EVENTS_SCHEMAS:
        keep = Path(events_relpath(dataset, w_us)).name
        for old in (offline / EVENTS / dataset).glob("run-*.parquet"):
            if old.name != keep:
                old.unlink()


def publish_dbt_events(
    settings: Settings, w_us: int, after_us: int | None, full_refresh: bool = False
) -> dict[str, int]:
    """Publish the rows the dbt run at ``w_us`` learned of; return the row counts.

    The warehouse's deduplicated tables only grow and a row's copy never changes,
    so the run's rows are those ingested in ``(after_us, w_us]`` (every row up to
    ``w_us`` for a full run), whatever later runs appended since.
    """
    since = "" if after_us is None else f" and ingested_us > {after_us}"
    counts = {}
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        for dataset, relation in DBT_RELATIONS.items():
            columns = ", ".join(EVENTS_SCHEMAS[dataset].names)
            table = con.sql(
                f"select {columns} from {relation} where ingested_us <= {w_us}{since}"
            ).to_arrow_table()
            write_atomic(
                settings.offline / events_relpath(dataset, w_us),
                encode(dataset, table, w_us, after_us),
            )
            counts[dataset] = table.num_rows
    finally:
        con.close()
    if full_refresh:
        drop_other_runs(settings.offline, w_us)
    return counts
