"""Staging, validation and dedupe in Spark SQL: a line-by-line mirror of the dbt models.

``stg_bank__transactions`` / ``stg_bank__fraud_labels`` / ``int_*__deduped``
(``transforms/dbt/models``) are the reference; every quarantine reason, regex
and tie-break here must give the same answer row for row. Two places need more
than a translation:

* Regexes: DuckDB's ``regexp_full_match`` (RE2) matches the whole string; Java's
  ``rlike`` finds a match anywhere, and its ``$`` also matches before a final
  newline. The patterns are wrapped as ``^(?:...)\\z``.
* ``try_cast(event_ts as timestamptz)`` in DuckDB is more lenient than Spark's
  timestamp cast on strings that pass the offset regex: it accepts the time
  ``24:00:00`` (with a zero fraction) as the next midnight, which Spark rejects,
  so the instant is computed here from the string's fields with DuckDB's rules
  (date valid in the proleptic Gregorian calendar; hour < 24, minute < 60,
  second < 60, or exactly 24:00:00). Offsets are checked before either engine
  converts anything (the dbt macro ``utc_offset_in_range``): -12:00 to +14:00,
  minutes 00-59, else the row is quarantined. ``tests/test_spark_engine.py``
  pins these cases.
* ``raw_amount <> floor(raw_amount)``: Spark's ``floor`` returns a bigint and
  overflows (ANSI mode raises) above 2^63, where DuckDB's stays a double.
  ``raw_amount % 1 <> 0`` is the same test on finite doubles.
"""

from __future__ import annotations

from pitstore.core.spec import DERIVED_INPUTS

# The dbt macros' patterns (transforms/dbt/macros/pitstore_time.sql), verbatim.
ISO_WITH_OFFSET = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})"
ISO_NAIVE = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?"


def full_match(column: str, pattern: str) -> str:
    """RE2 ``regexp_full_match`` in Spark SQL (a raw literal: no escape processing)."""
    assert "'" not in pattern
    return f"({column} rlike r'^(?:{pattern})\\z')"


# The UTC offsets real zones use, in minutes: -12:00 (Etc/GMT+12) to +14:00
# (Pacific/Kiritimati). The dbt macro utc_offset_in_range states the same bounds.
MIN_OFFSET_MINUTES = -12 * 60
MAX_OFFSET_MINUTES = 14 * 60

# Microseconds since the epoch of an ISO string that passed ISO_WITH_OFFSET,
# DuckDB's way; null where DuckDB's try_cast gives null.
_EVENT_US = r"""
    case when p_date is not null
          and ((p_hour < 24 and p_minute < 60 and p_second < 60)
               or (p_hour = 24 and p_minute = 0 and p_second = 0 and p_fraction_us = 0))
        then cast(unix_date(p_date) as bigint) * 86400000000
             + p_hour * 3600000000 + p_minute * 60000000 + p_second * 1000000
             + p_fraction_us - p_offset_minutes * 60000000
    end"""


def transactions_sql(raw: str) -> str:
    """stg_bank__transactions over ``raw`` (landing columns + filename, file_row_number)."""
    derived = ",\n        ".join(f"{expr} as {name}" for name, expr in DERIVED_INPUTS.items())
    return f"""
with

source as (
    select * from {raw}
),

fields as (
    select
        *,
        {full_match("event_ts", ISO_WITH_OFFSET)} as p_iso,
        try_cast(substr(event_ts, 1, 10) as date) as p_date,
        try_cast(substr(event_ts, 12, 2) as bigint) as p_hour,
        try_cast(substr(event_ts, 15, 2) as bigint) as p_minute,
        try_cast(substr(event_ts, 18, 2) as bigint) as p_second,
        try_cast(rpad(regexp_extract(event_ts, r'^.{{19}}\\.(\\d{{1,6}})', 1), 6, '0') as bigint)
            as p_fraction_us,
        case
            when substr(event_ts, -1, 1) = 'Z' then 0
            else (case when substr(event_ts, -6, 1) = '-' then -1 else 1 end)
                 * (try_cast(substr(event_ts, -5, 2) as bigint) * 60
                    + try_cast(substr(event_ts, -2, 2) as bigint))
        end as p_offset_minutes,
        try_cast(substr(event_ts, -2, 2) as bigint) as p_offset_mm
    from source
),

offsets as (
    select
        *,
        (substr(event_ts, -1, 1) = 'Z'
         or (p_offset_mm < 60
             and p_offset_minutes between {MIN_OFFSET_MINUTES} and {MAX_OFFSET_MINUTES}))
            as p_offset_in_range
    from fields
),

parsed as (
    select
        regexp_extract(filename, '(transactions/.*)$', 1) as source_file,
        file_row_number as source_row,
        transaction_id,
        account_id,
        card_id,
        merchant_id,
        merchant_category,
        amount as raw_amount,
        currency,
        channel,
        country,
        device_id,
        event_ts as raw_event_ts,
        case when p_iso then p_offset_in_range end as offset_in_range,
        case when p_iso and p_offset_in_range then {_EVENT_US} end as event_us,
        ingested_at,
        unix_micros(ingested_at) as ingested_us
    from offsets
),

validated as (
    select
        *,
        case
            when transaction_id is null then 'null transaction_id'
            when account_id is null then 'null account_id'
            when merchant_id is null then 'null merchant_id'
            when ingested_at is null then 'null ingested_at'
            when raw_amount is null then 'null amount'
            when isnan(raw_amount) or abs(raw_amount) = double('infinity')
                then 'amount is NaN or infinite'
            when raw_amount < 0 then 'negative amount'
            when raw_amount % 1 <> 0 then 'amount is not in whole minor units'
            when raw_amount > 1e15 then 'amount out of range'
            when raw_event_ts is null then 'null event_ts'
            when {full_match("raw_event_ts", ISO_NAIVE)} then 'naive event_ts (no UTC offset)'
            when not offset_in_range then 'event_ts offset out of range'
            when event_us is null then 'unparseable event_ts'
            when event_us > ingested_us then 'event_ts after ingested_at'
        end as quarantine_reason
    from parsed
)

select
    source_file,
    source_row,
    transaction_id,
    account_id,
    card_id,
    merchant_id,
    merchant_category,
    case when quarantine_reason is null then try_cast(raw_amount as bigint) end as amount,
    currency,
    channel,
    country,
    device_id,
    event_us,
    ingested_at,
    ingested_us,
    {derived},
    raw_amount,
    raw_event_ts,
    quarantine_reason
from validated
"""


def labels_sql(raw: str) -> str:
    """stg_bank__fraud_labels over ``raw``."""
    return f"""
select
    source_file,
    source_row,
    transaction_id,
    is_fraud,
    label_ts,
    unix_micros(label_ts) as label_us,
    ingested_at,
    unix_micros(ingested_at) as ingested_us,
    case
        when transaction_id is null then 'null transaction_id'
        when is_fraud is null then 'null is_fraud'
        when label_ts is null then 'null label_ts'
        when ingested_at is null then 'null ingested_at'
        when label_ts > ingested_at then 'label_ts after ingested_at'
    end as quarantine_reason
from (
    select
        regexp_extract(filename, '(labels/.*)$', 1) as source_file,
        file_row_number as source_row,
        transaction_id,
        is_fraud,
        label_ts,
        ingested_at
    from {raw}
) source
"""


def deduped_sql(
    staged: str,
    columns: str,
    watermark_us: int,
    after_us: int | None = None,
    key: str = "transaction_id",
) -> str:
    """int_*__deduped: valid rows known at W, the first ingested copy per ``key``
    (incremental: among the copies ingested after ``after_us``, as dbt's model)."""
    after = "" if after_us is None else f"\n      and ingested_us > {after_us}"
    return f"""
select {columns}
from (
    select
        *,
        row_number() over (
            partition by {key}
            order by ingested_us, source_file, source_row
        ) as delivery_rank
    from {staged}
    where quarantine_reason is null
      and ingested_us <= {watermark_us}{after}
) ranked
where delivery_rank = 1
"""


DEDUPED_TRANSACTION_COLUMNS = (
    "transaction_id, account_id, card_id, merchant_id, merchant_category, amount, currency, "
    "channel, country, device_id, event_us, ingested_at, ingested_us, "
    + ", ".join(DERIVED_INPUTS)
    + ", source_file"
)
DEDUPED_LABEL_COLUMNS = "transaction_id, is_fraud, label_ts, label_us, ingested_at, ingested_us"
