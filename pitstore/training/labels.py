"""Fraud training rows from transactions, with labels known by a cutoff date.

One request row per (deduplicated) transaction: ``ts`` = the transaction's
``event_ts`` -- it is scored just before it happens. Features are joined with
``feature_ts <= ts``; a boundary ``T`` covers events ``< T``, so a transaction
never sees itself.

Labels have their own time (DESIGN.md): a label counts only if its
``label_ts`` and ``ingested_at`` are both ``<= known_by``. A transaction is

- ``fraud``: a fraud label known by the cutoff (label 1);
- ``genuine``: a dispute resolved as genuine known by the cutoff (label 0);
- ``assumed_genuine``: no label known, and the transaction is at least
  ``maturity`` old at the cutoff -- a chargeback would most likely have
  arrived by now (label 0);
- ``immature``: no label known and younger than ``maturity``: its label could
  not be known yet. Excluded by default (``immature="exclude"``), or kept with
  a null label (``immature="mark"``). The audit counts them.

Only transactions ingested by the cutoff are rows (the bank did not know of
the others). Reads the deduplicated events the completed transform runs
published (``pitstore.core.offline_layout``), whichever engine ran them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pitstore.core.config import Settings
from pitstore.core.offline_layout import EventFiles, EventsError, event_files
from pitstore.core.timeutil import from_us, to_us

DEFAULT_MATURITY = timedelta(days=14)
CONTEXT_COLUMNS = ("amount", "channel", "country", "merchant_category", "currency")
EVENT_TIMES = {"transactions": ("event_ts", "event_us"), "labels": ("label_ts", "label_us")}


class LabelError(ValueError):
    """A label cutoff or window that cannot be honoured."""


@dataclass(frozen=True)
class LabelPolicy:
    known_by: datetime
    maturity: timedelta = DEFAULT_MATURITY
    immature: str = "exclude"  # or "mark"
    start: datetime | None = None  # first event_ts included
    end: datetime | None = None  # event_ts strictly before this

    def describe(self) -> dict[str, Any]:
        return {
            "labels_known_by": self.known_by.isoformat(),
            "maturity_days": self.maturity.total_seconds() / 86400,
            "immature": self.immature,
            "window_start": self.start.isoformat() if self.start else None,
            "window_end": self.end.isoformat() if self.end else None,
        }


class LabelWindow(NamedTuple):
    """What a label policy means in µs against the published events."""

    found: EventFiles
    cut: int  # known_by
    mature_before: int  # rows older than this are mature
    lo: int  # first event time included
    hi: int  # event times strictly before this


def label_window(settings: Settings, policy: LabelPolicy) -> LabelWindow:
    """The events known at the newest run and the policy's bounds; shared by the
    fraud and credit labels. Raises ``LabelError`` for a cutoff no run covers."""
    if policy.known_by.tzinfo is None:
        raise LabelError("labels-known-by must be timezone-aware")
    try:
        found = event_files(settings)
    except EventsError as exc:
        raise LabelError(str(exc)) from exc
    cut = to_us(policy.known_by)
    if cut > found.watermark_us:
        raise LabelError(
            f"labels-known-by {policy.known_by.isoformat()} is after the newest run "
            f"({from_us(found.watermark_us).isoformat()}): what was known by then is not loaded yet"
        )
    return LabelWindow(
        found,
        cut,
        to_us(policy.known_by - policy.maturity),
        to_us(policy.start) if policy.start else -(2**62),
        min(to_us(policy.end), cut) if policy.end else cut,
    )


def fraud_requests(settings: Settings, policy: LabelPolicy) -> tuple[pa.Table, dict[str, Any]]:
    """Request rows (keys, ts, label, context) and the label audit."""
    if policy.immature not in ("exclude", "mark"):
        raise LabelError(f"immature must be 'exclude' or 'mark', not {policy.immature!r}")
    found, cut, mature_before, lo, hi = label_window(settings, policy)
    con = duckdb.connect()
    try:
        # The events' timestamps as µs, as every cutoff below is.
        for dataset, (ts, ts_us) in EVENT_TIMES.items():
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in found.files[dataset])
            con.execute(
                f"create view {dataset} as select *, epoch_us({ts}) as {ts_us}, "
                f"epoch_us(ingested_at) as ingested_us from read_parquet([{files}])"
            )
        ctx = ", ".join(f"t.{c}" for c in CONTEXT_COLUMNS)
        rows = con.sql(
            f"""
            select t.transaction_id, t.account_id, t.merchant_id,
                   make_timestamptz(t.event_us) as ts, {ctx},
                   case when l.is_fraud then 'fraud'
                        when l.transaction_id is not null then 'genuine'
                        when t.event_us <= {mature_before} then 'assumed_genuine'
                        else 'immature' end as label_status,
                   (l2.transaction_id is not null and l.transaction_id is null) as label_later
            from transactions t
            left join labels l
              on l.transaction_id = t.transaction_id
             and l.label_us <= {cut} and l.ingested_us <= {cut}
            left join labels l2
              on l2.transaction_id = t.transaction_id and l2.is_fraud
            where t.ingested_us <= {cut} and t.event_us >= {lo} and t.event_us < {hi}
            order by t.event_us, t.transaction_id
            """
        ).to_arrow_table()
        not_ingested = con.execute(
            f"select count(*) from transactions where event_us >= {lo} "
            f"and event_us < {hi} and ingested_us > {cut}"
        ).fetchall()[0][0]
    finally:
        con.close()
    status = rows.column("label_status")
    counts = {
        s: int(pc.sum(pc.equal(status, s)).as_py() or 0)
        for s in ("fraud", "genuine", "assumed_genuine", "immature")
    }
    later = int(pc.sum(rows.column("label_later")).as_py() or 0)
    rows = rows.drop_columns(["label_later"])
    label = pc.if_else(
        pc.equal(status, "fraud"),
        pa.scalar(1, pa.int8()),
        pc.if_else(
            pc.equal(status, "immature"), pa.scalar(None, pa.int8()), pa.scalar(0, pa.int8())
        ),
    )
    rows = rows.append_column("label", label)
    if policy.immature == "exclude":
        rows = rows.filter(pc.not_equal(status, "immature"))
    audit = {
        "labels": {
            **policy.describe(),
            "transactions_in_window": int(counts_total(counts)),
            "rows": rows.num_rows,
            "by_status": counts,
            "immature_excluded": counts["immature"] if policy.immature == "exclude" else 0,
            "immature_marked": counts["immature"] if policy.immature == "mark" else 0,
            "not_ingested_by_cutoff": int(not_ingested),
            # Hindsight, for the report only: fraud labels the newest run knows
            # that were not known at the cutoff (these rows carry 0 or null).
            "fraud_labels_known_only_after_cutoff": later,
            "fraud_rate": round(counts["fraud"] / rows.num_rows, 6) if rows.num_rows else None,
        }
    }
    return rows, audit


def counts_total(counts: dict[str, int]) -> int:
    return sum(counts.values())
