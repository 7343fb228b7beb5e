"""quarantine_events' counts for a Spark run (the dbt engine keeps them in a table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitstore.core.timeutil import from_us

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pitstore.core.runs import RunSummary

DRIFT_REASON = "schema drift in landing file"


def count_quarantine(
    spark: SparkSession,
    drifted: list[str],
    w_us: int,
    previous: int | None,
    summary: RunSummary,
    previous_total: int | None = None,
) -> None:
    """quarantine_events' counts: bad rows a run sees, "new" if the previous run did not.

    A row is seen by run W when its file is read (ingest_date <= date(W)) and it is
    ingested at or before W (or has no ingested_at at all). What run P saw, run W
    sees too, so with P's total known (``previous_total``) the total is that plus
    the new rows, and the staged rows need only hold the files with new ones.
    """
    prev_day = from_us(previous).date().isoformat() if previous is not None else None
    seen_before = (
        "false"
        if previous is None
        else (
            f"regexp_extract(source_file, 'ingest_date=([0-9-]+)', 1) <= '{prev_day}' "
            f"and (ingested_us is null or ingested_us <= {previous})"
        )
    )
    rows = spark.sql(
        f"""
        select reason, count(*) as n, sum(case when {seen_before} then 0 else 1 end) as new
        from (
            select quarantine_reason as reason, source_file, ingested_us
            from pit_stg_transactions where quarantine_reason is not null
            union all
            select quarantine_reason, source_file, ingested_us
            from pit_stg_labels where quarantine_reason is not null
            union all
            select quarantine_reason, source_file, ingested_us
            from pit_stg_ledger where quarantine_reason is not null
            union all
            select quarantine_reason, source_file, ingested_us
            from pit_stg_applications where quarantine_reason is not null
            union all
            select quarantine_reason, source_file, ingested_us
            from pit_stg_credit_outcomes where quarantine_reason is not null
        ) bad
        where ingested_us is null or ingested_us <= {w_us}
        group by reason
        """
    ).collect()
    total = 0
    for r in sorted(rows, key=lambda r: r.reason):
        total += r.n
        if r.new:
            summary.quarantined_new[r.reason] = int(r.new)
    for uri in drifted:
        day = uri.rsplit("ingest_date=", 1)[-1][:10]
        new = prev_day is None or day > prev_day
        if not new and previous_total is not None:
            continue
        n = spark.read.parquet(uri).count()
        total += n
        if new:
            summary.quarantined_new[DRIFT_REASON] = summary.quarantined_new.get(DRIFT_REASON, 0) + n
    if previous_total is not None:
        total = previous_total + sum(summary.quarantined_new.values())
    summary.quarantined_total = total
