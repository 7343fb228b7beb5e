"""The landing-zone contract: which datasets land, with which columns and types.

Every producer (the synthetic generator, a bank's export job) writes these
schemas; every reader (the dbt staging, the Spark staging, the zone reader)
checks files against them. Nothing else spells a landing column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

__all__ = [
    "DATASETS",
    "LABELS_SCHEMA",
    "TRANSACTIONS_SCHEMA",
    "UTC_TS",
    "BatchParams",
    "LandingBatch",
    "PartitionKey",
    "columns_of",
]

DATASETS = ("transactions", "labels")
# Microseconds, UTC: Feast's DuckDB store fails on nanosecond tz-aware stamps.
UTC_TS = pa.timestamp("us", tz="UTC")
TRANSACTIONS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("account_id", pa.string()),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_category", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("channel", pa.string()),
        ("country", pa.string()),
        ("device_id", pa.string()),
        # A string on purpose: source systems stamp their own offsets, and the
        # staging (not the landing) decides which are valid.
        ("event_ts", pa.string()),
        ("ingested_at", UTC_TS),
    ]
)
LABELS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("is_fraud", pa.bool_()),
        ("label_ts", UTC_TS),
        ("ingested_at", UTC_TS),
    ]
)
SCHEMAS = {"transactions": TRANSACTIONS_SCHEMA, "labels": LABELS_SCHEMA}


def columns_of(schema: pa.Schema) -> dict[str, str]:
    """``{column: arrow type string}``: what a file's schema is compared with."""
    return {f.name: str(f.type) for f in schema}


PartitionKey = tuple[str, str, int]  # (dataset, "YYYY-MM-DD" ingest date, part)


class BatchParams(Protocol):
    """What the zone records about how a batch was made (the manifest's params)."""

    @property
    def start(self) -> datetime: ...

    @property
    def complete_through(self) -> datetime: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LandingBatch:
    """Tables to land, keyed by (dataset, ingest_date, part), sorted by key."""

    params: BatchParams
    tables: dict[PartitionKey, pa.Table]
    # Producer bookkeeping for reports and tests; never written to the zone.
    stats: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def relative_path(key: PartitionKey) -> str:
        dataset, ingest_date, part = key
        return f"{dataset}/ingest_date={ingest_date}/part-{part:05d}.parquet"
