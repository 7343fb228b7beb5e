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
    "APPLICATIONS_SCHEMA",
    "CREDIT_OUTCOMES_SCHEMA",
    "DATASETS",
    "LABELS_SCHEMA",
    "LEDGER_EVENT_TYPES",
    "LEDGER_SCHEMA",
    "TRANSACTIONS_SCHEMA",
    "UTC_TS",
    "BatchParams",
    "LandingBatch",
    "PartitionKey",
    "columns_of",
]

DATASETS = ("transactions", "labels", "ledger", "applications", "credit_outcomes")
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

# --- Credit: the account ledger, loan applications and their outcomes --------

# What a ledger event records. Inflows: salary, credit. Outflows: direct_debit,
# overdraft_fee. Events of concern: missed_payment (a scheduled payment not
# made), returned_payment (a direct debit bounced). balance_snapshot: the
# end-of-day balance, one per account and day, carried in ``balance``.
LEDGER_EVENT_TYPES = (
    "salary",
    "credit",
    "direct_debit",
    "overdraft_fee",
    "missed_payment",
    "returned_payment",
    "balance_snapshot",
)
LEDGER_SCHEMA = pa.schema(
    [
        ("ledger_event_id", pa.string()),
        ("account_id", pa.string()),
        ("event_type", pa.string()),  # one of LEDGER_EVENT_TYPES
        # Minor units, integral, like transactions.amount; always >= 0 (the type
        # says the direction); null for balance_snapshot.
        ("amount", pa.float64()),
        # Signed end-of-day balance in minor units; null except for balance_snapshot.
        ("balance", pa.float64()),
        ("currency", pa.string()),
        ("event_ts", pa.string()),  # a string for the same reason as transactions.event_ts
        ("ingested_at", UTC_TS),
    ]
)
# A loan application: the spine of credit training frames and the body of
# POST /v1/prescreen. No name, birth date or address: the age in whole years
# and a coarse region are what the rules and the segments need.
APPLICATIONS_SCHEMA = pa.schema(
    [
        ("application_id", pa.string()),
        ("account_id", pa.string()),
        ("applicant_age", pa.int32()),
        ("amount", pa.float64()),  # requested principal, minor units
        ("term_months", pa.int32()),
        ("stated_income", pa.float64()),  # annual gross, minor units
        ("employment_months", pa.int32()),
        ("existing_debt", pa.float64()),  # monthly repayments on other debt, minor units
        ("purpose", pa.string()),
        ("region", pa.string()),
        # From the credit bureau at application time; null when none on file.
        ("months_since_last_default", pa.int32()),
        ("application_ts", pa.string()),  # when the customer applied (event time)
        ("ingested_at", UTC_TS),
    ]
)
# The outcome of an application that was booked: ``defaulted`` is whether the
# loan went 90+ days past due within 12 months of ``application_ts``.
# ``label_ts`` is when the outcome became a fact: the default date, or the end
# of the 12-month performance window for a loan that did not default.
CREDIT_OUTCOMES_SCHEMA = pa.schema(
    [
        ("application_id", pa.string()),
        ("defaulted", pa.bool_()),
        ("label_ts", UTC_TS),
        ("ingested_at", UTC_TS),
    ]
)
SCHEMAS = {
    "transactions": TRANSACTIONS_SCHEMA,
    "labels": LABELS_SCHEMA,
    "ledger": LEDGER_SCHEMA,
    "applications": APPLICATIONS_SCHEMA,
    "credit_outcomes": CREDIT_OUTCOMES_SCHEMA,
}


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
