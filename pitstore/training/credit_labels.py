"""Credit training rows: loan applications, with default outcomes known by a cutoff.

One request row per (deduplicated) application the bank had received by the
cutoff ``known_by`` (``ingested_at <= known_by``): ``ts`` = ``application_ts``,
the moment it was scored, so its features are what the store held then.

An outcome has its own time (``label_ts``: the default date, or
``application_ts`` + 365 days for a loan that ran its year without one) and
arrives later still (``ingested_at``). It counts only if BOTH are
``<= known_by``. An application is

- ``defaulted`` (label 1) / ``repaid`` (label 0): at least ``maturity`` old at
  the cutoff and its outcome known by then;
- ``immature``: younger than ``maturity`` at the cutoff. It never trains, even
  when its default is already known: within an immature cohort only the early
  defaults have surfaced while its good loans cannot have (a loan is good only
  once its year has passed), so keeping the known defaults alone would bias
  the default rate up -- and towards whatever makes a loan fail early;
- ``unknown``: mature, but no outcome known by the cutoff (an outcome
  delivered late, or a declined application that never became a loan):
  excluded, since guessing "repaid" would bias the rate down.

Maturity is 12 months by default (``CREDIT_MATURITY``): default labels mean 90+
days past due within 12 months of the application. Every count is in the
frame's audit (``labels``). Reads the deduplicated events the completed
transform runs published (``pitstore.core.offline_layout``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pitstore.core.config import Settings
from pitstore.core.offline_layout import APPLICATIONS_EVENTS_SCHEMA
from pitstore.training.labels import LabelError, LabelPolicy, label_window

CREDIT_MATURITY = timedelta(days=365)
LABEL = "defaulted"  # the frame's label column: 1 defaulted, 0 repaid
STATUSES = ("defaulted", "repaid", "immature", "unknown")
# The application's own columns carried into the frame (not delivery bookkeeping).
APPLICATION_COLUMNS = tuple(
    n for n in APPLICATIONS_EVENTS_SCHEMA.names if n not in ("ingested_at", "source_file")
)


def credit_policy(known_by: Any, maturity: timedelta = CREDIT_MATURITY, **kw: Any) -> LabelPolicy:
    """A :class:`LabelPolicy` with credit's 12-month maturity."""
    return LabelPolicy(known_by=known_by, maturity=maturity, **kw)


def _sql_files(paths: list[Any]) -> str:
    return ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)


def credit_requests(settings: Settings, policy: LabelPolicy) -> tuple[pa.Table, dict[str, Any]]:
    """Request rows (application_id, account_id, ts, the application, ``defaulted``)
    and the label audit. Only labelled (mature, outcome known) rows are returned."""
    if policy.immature != "exclude":
        raise LabelError(
            "credit frames never keep immature applications (--immature exclude): "
            "an immature cohort's known outcomes are its early defaults only"
        )
    if policy.maturity < timedelta(0):
        raise LabelError("label maturity must not be negative")
    found, cut, mature_before, lo, hi = label_window(settings, policy)
    con = duckdb.connect()
    try:
        con.execute(
            "create view apps as select *, epoch_us(application_ts) as app_us, "
            "epoch_us(ingested_at) as ingested_us from read_parquet(["
            f"{_sql_files(found.files['applications'])}])"
        )
        con.execute(
            "create view outcomes as select *, epoch_us(label_ts) as label_us, "
            "epoch_us(ingested_at) as ingested_us from read_parquet(["
            f"{_sql_files(found.files['credit_outcomes'])}])"
        )
        cols = ", ".join(f"a.{c}" for c in APPLICATION_COLUMNS if c != "application_ts")
        rows = con.sql(
            f"""
            select {cols}, make_timestamptz(a.app_us) as application_ts,
                   make_timestamptz(a.app_us) as ts,
                   case when a.app_us > {mature_before} then 'immature'
                        when o.application_id is null then 'unknown'
                        when o.defaulted then 'defaulted'
                        else 'repaid' end as label_status,
                   (a.app_us > {mature_before} and coalesce(o.defaulted, false))
                       as immature_default_known,
                   (a.app_us <= {mature_before} and o.application_id is null
                    and later.defaulted is true)
                       as default_known_later
            from apps a
            left join outcomes o
              on o.application_id = a.application_id
             and o.label_us <= {cut} and o.ingested_us <= {cut}
            left join outcomes later on later.application_id = a.application_id
            where a.ingested_us <= {cut} and a.app_us >= {lo} and a.app_us < {hi}
            order by a.app_us, a.application_id
            """
        ).to_arrow_table()
        not_ingested = con.execute(
            f"select count(*) from apps where app_us >= {lo} and app_us < {hi} "
            f"and ingested_us > {cut}"
        ).fetchall()[0][0]
    finally:
        con.close()
    status = rows.column("label_status")
    counts = {s: int(pc.sum(pc.equal(status, s)).as_py() or 0) for s in STATUSES}
    early = int(pc.sum(rows.column("immature_default_known")).as_py() or 0)
    later = int(pc.sum(rows.column("default_known_later")).as_py() or 0)
    rows = rows.drop_columns(["immature_default_known", "default_known_later"])
    rows = rows.filter(pc.is_in(status, pa.array(["defaulted", "repaid"])))
    label = pc.cast(pc.equal(rows.column("label_status"), "defaulted"), pa.int8())
    rows = rows.append_column(LABEL, label)
    labelled = counts["defaulted"] + counts["repaid"]
    audit = {
        "labels": {
            **policy.describe(),
            "source": "credit_outcomes",
            "applications_in_window": sum(counts.values()),
            "rows": rows.num_rows,
            "by_status": counts,
            "immature_excluded": counts["immature"],
            "immature_defaults_known_excluded": early,
            "unknown_excluded": counts["unknown"],
            "not_ingested_by_cutoff": int(not_ingested),
            # Hindsight, for the report only: mature applications whose default the
            # newest run knows but the cutoff did not (they are excluded as unknown).
            "defaults_known_only_after_cutoff": later,
            "default_rate": round(counts["defaulted"] / labelled, 6) if labelled else None,
        }
    }
    return rows, audit
