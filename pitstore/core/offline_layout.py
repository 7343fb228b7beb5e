"""The published deduplicated events: one format, whichever engine ran the transform.

Training builds its rows from the transactions and labels a run *learned of*;
both engines (dbt and Spark) publish them next to the feature views, so a home
built by either engine alone can train. This module is the format's one
definition (paths, schema, sort order, footer metadata) and its reader; the
writer is ``pitstore.transform.events``.

Layout, under the offline store (``<home>/offline``)::

    _events/transactions/run-<W>.parquet   # W stamped as 20260110T000000.000000Z
    _events/labels/run-<W>.parquet
    _events/ledger/run-<W>.parquet         # the account ledger
    _events/applications/run-<W>.parquet   # loan applications
    _events/credit_outcomes/run-<W>.parquet

Rows: a run at watermark ``W`` whose previous completed run is ``P`` publishes
the deduplicated rows -- the first ingested valid copy per id (``EVENT_IDS``:
``transaction_id``, ``ledger_event_id``, ``application_id``; ties broken by
landing file and row), the same rows as dbt's
``int_*__deduped`` -- with ``P < ingested_at <= W``: the ids that run was the
first to see. A run with no previous run (the first, or a full refresh)
publishes every deduplicated row with ``ingested_at <= W``. The files of a
chain of runs are therefore disjoint, and their union is everything known at
the newest one.

Columns (exact names and Arrow types, every field nullable) are
:data:`EVENTS_SCHEMAS`' (``TRANSACTIONS_EVENTS_SCHEMA`` and so on); timestamps
are ``timestamp[us, UTC]``, amounts integer minor units. Rows are sorted by
:data:`SORT_KEYS` (the id is unique within a file, so the order is total). The
footer's key-value metadata names the format (``FORMAT_KEY``), the dataset, the
run (``WATERMARK_KEY``, µs) and the run it continues (``AFTER_KEY``, µs, empty
for a full one). Files are zstd parquet written by pyarrow with fixed options,
so a run repeated at the same W writes the same bytes, and both engines write
the same bytes for the same rows.

Only completed runs count (``pitstore.core.runs.completed_watermarks``): the
reader starts from the newest one and follows each file's ``after`` run back to
a full one, so a crashed run's file, or files a full refresh left behind, are
never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pitstore.core.config import Settings
from pitstore.core.runs import completed_watermarks
from pitstore.core.timeutil import from_us, stamp

EVENTS = "_events"
FORMAT = "1"
UTC_US = pa.timestamp("us", tz="UTC")
TRANSACTIONS_EVENTS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("account_id", pa.string()),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_category", pa.string()),
        ("amount", pa.int64()),  # minor units
        ("currency", pa.string()),
        ("channel", pa.string()),
        ("country", pa.string()),
        ("device_id", pa.string()),
        ("event_ts", UTC_US),
        ("ingested_at", UTC_US),
        # The landing file of the copy kept (``transactions/ingest_date=.../...``).
        ("source_file", pa.string()),
    ]
)
LABELS_EVENTS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("is_fraud", pa.bool_()),
        ("label_ts", UTC_US),
        ("ingested_at", UTC_US),
    ]
)
LEDGER_EVENTS_SCHEMA = pa.schema(
    [
        ("ledger_event_id", pa.string()),
        ("account_id", pa.string()),
        ("event_type", pa.string()),
        ("amount", pa.int64()),  # minor units; null on a balance_snapshot
        ("balance", pa.int64()),  # minor units, signed; null except on a balance_snapshot
        ("currency", pa.string()),
        ("event_ts", UTC_US),
        ("ingested_at", UTC_US),
        ("source_file", pa.string()),
    ]
)
APPLICATIONS_EVENTS_SCHEMA = pa.schema(
    [
        ("application_id", pa.string()),
        ("account_id", pa.string()),
        ("applicant_age", pa.int32()),
        ("amount", pa.int64()),  # minor units
        ("term_months", pa.int32()),
        ("stated_income", pa.int64()),  # minor units
        ("employment_months", pa.int32()),
        ("existing_debt", pa.int64()),  # minor units
        ("purpose", pa.string()),
        ("region", pa.string()),
        ("months_since_last_default", pa.int32()),
        ("application_ts", UTC_US),
        ("ingested_at", UTC_US),
        ("source_file", pa.string()),
    ]
)
CREDIT_OUTCOMES_EVENTS_SCHEMA = pa.schema(
    [
        ("application_id", pa.string()),
        ("defaulted", pa.bool_()),
        ("label_ts", UTC_US),
        ("ingested_at", UTC_US),
    ]
)
EVENTS_SCHEMAS = {
    "transactions": TRANSACTIONS_EVENTS_SCHEMA,
    "labels": LABELS_EVENTS_SCHEMA,
    "ledger": LEDGER_EVENTS_SCHEMA,
    "applications": APPLICATIONS_EVENTS_SCHEMA,
    "credit_outcomes": CREDIT_OUTCOMES_EVENTS_SCHEMA,
}
# The id each dataset is deduplicated by (the first ingested copy per id is kept).
EVENT_IDS = {
    "transactions": "transaction_id",
    "labels": "transaction_id",
    "ledger": "ledger_event_id",
    "applications": "application_id",
    "credit_outcomes": "application_id",
}
SORT_KEYS = {
    "transactions": ("event_ts", "transaction_id"),
    "labels": ("label_ts", "transaction_id"),
    "ledger": ("event_ts", "ledger_event_id"),
    "applications": ("application_ts", "application_id"),
    "credit_outcomes": ("label_ts", "application_id"),
}
FORMAT_KEY = b"pitstore.events.format"
DATASET_KEY = b"pitstore.events.dataset"
WATERMARK_KEY = b"pitstore.events.watermark_us"
AFTER_KEY = b"pitstore.events.after_us"


class EventsError(RuntimeError):
    """The published events cannot answer: no completed run, or a missing or foreign file."""


def events_relpath(dataset: str, w_us: int) -> str:
    """``_events/<dataset>/run-<W>.parquet``, relative to the offline store."""
    if dataset not in EVENTS_SCHEMAS:
        raise ValueError(f"unknown events dataset {dataset!r}")
    return f"{EVENTS}/{dataset}/run-{stamp(from_us(w_us))}.parquet"


def events_metadata(dataset: str, w_us: int, after_us: int | None) -> dict[bytes, bytes]:
    return {
        FORMAT_KEY: FORMAT.encode(),
        DATASET_KEY: dataset.encode(),
        WATERMARK_KEY: str(w_us).encode(),
        AFTER_KEY: b"" if after_us is None else str(after_us).encode(),
    }


@dataclass(frozen=True)
class EventFiles:
    """The files holding everything known at ``watermark_us``, oldest run first."""

    watermark_us: int  # the newest completed run
    runs: tuple[int, ...]  # the chain of runs whose files are read, ascending
    files: dict[str, list[Path]]  # dataset -> one file per run in ``runs``


def _after(path: Path, dataset: str, w_us: int) -> int | None:
    """The run a file continues (None: a full file), after checking it is ours."""
    if not path.exists():
        raise EventsError(
            f"run {from_us(w_us).isoformat()} completed but published no {dataset} events "
            f"({path}): re-run `pitstore transform --watermark {from_us(w_us).isoformat()}`"
        )
    schema = pq.read_schema(path)
    meta = schema.metadata or {}
    expected = events_metadata(dataset, w_us, None)
    if any(meta.get(k) != expected[k] for k in (FORMAT_KEY, DATASET_KEY, WATERMARK_KEY)):
        raise EventsError(f"{path} is not a format-{FORMAT} {dataset} events file of its run")
    if not schema.remove_metadata().equals(EVENTS_SCHEMAS[dataset]):
        raise EventsError(f"{path} does not have the {dataset} events schema")
    after = meta.get(AFTER_KEY, b"")
    return int(after) if after else None


def event_files(settings: Settings) -> EventFiles:
    """The published events of the newest completed run and of the runs it continues."""
    completed = completed_watermarks(settings)
    if not completed:
        raise EventsError(
            f"no transform run has completed under {settings.home}: run `pitstore transform` first"
        )
    done = set(completed)
    chain: list[int] = []
    w: int | None = completed[-1]
    while w is not None:
        chain.append(w)
        afters = {_after(settings.offline / events_relpath(d, w), d, w) for d in EVENTS_SCHEMAS}
        if len(afters) != 1:
            raise EventsError(
                f"the events files of run {from_us(w).isoformat()} continue different runs"
            )
        (w,) = afters
        if w is not None and (w not in done or w >= chain[-1]):
            raise EventsError(
                f"the events of run {from_us(chain[-1]).isoformat()} continue run "
                f"{from_us(w).isoformat()}, which did not complete"
            )
    runs = tuple(reversed(chain))
    files = {d: [settings.offline / events_relpath(d, r) for r in runs] for d in EVENTS_SCHEMAS}
    return EventFiles(completed[-1], runs, files)


def read_events(settings: Settings, dataset: str) -> pa.Table:
    """Every deduplicated ``dataset`` row known at the newest completed run (as one table)."""
    found = event_files(settings)
    tables = [pq.read_table(p, schema=EVENTS_SCHEMAS[dataset]) for p in found.files[dataset]]
    return pa.concat_tables(tables).replace_schema_metadata(None)
