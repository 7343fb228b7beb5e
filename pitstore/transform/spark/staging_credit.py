"""Staging of the credit datasets in Spark SQL: the ledger, applications, credit outcomes.

A mirror of ``stg_bank__ledger``, ``stg_bank__applications`` and
``stg_bank__credit_outcomes`` (``transforms/dbt/models/staging``) and of the
macros they share (``transforms/dbt/macros/pitstore_staging.sql``): every
quarantine reason and its order are the dbt models'. Times are read as the
transactions' ``event_ts`` is (``staging.py`` says why it is computed from the
string's fields rather than cast).
"""

from __future__ import annotations

from pitstore.core.spec import LEDGER_DERIVED_INPUTS
from pitstore.landing.schema import LEDGER_EVENT_TYPES
from pitstore.transform.spark.staging import (
    _EVENT_US,
    ISO_NAIVE,
    ISO_WITH_OFFSET,
    MAX_OFFSET_MINUTES,
    MIN_OFFSET_MINUTES,
    full_match,
)


def with_time(raw: str, column: str) -> str:
    """``raw`` plus ``offset_in_range`` and ``parsed_us`` for the ISO string ``column``
    (null where it has no valid offset or names no instant, as dbt's ``offset_ts``)."""
    return f"""
select
    *,
    case when p_iso then p_offset_in_range end as offset_in_range,
    case when p_iso and p_offset_in_range then {_EVENT_US} end as parsed_us
from (
    select
        *,
        (substr({column}, -1, 1) = 'Z'
         or (p_offset_mm < 60
             and p_offset_minutes between {MIN_OFFSET_MINUTES} and {MAX_OFFSET_MINUTES}))
            as p_offset_in_range
    from (
        select
            *,
            {full_match(column, ISO_WITH_OFFSET)} as p_iso,
            try_cast(substr({column}, 1, 10) as date) as p_date,
            try_cast(substr({column}, 12, 2) as bigint) as p_hour,
            try_cast(substr({column}, 15, 2) as bigint) as p_minute,
            try_cast(substr({column}, 18, 2) as bigint) as p_second,
            try_cast(rpad(regexp_extract({column}, r'^.{{19}}\\.(\\d{{1,6}})', 1), 6, '0')
                as bigint) as p_fraction_us,
            case
                when substr({column}, -1, 1) = 'Z' then 0
                else (case when substr({column}, -6, 1) = '-' then -1 else 1 end)
                     * (try_cast(substr({column}, -5, 2) as bigint) * 60
                        + try_cast(substr({column}, -2, 2) as bigint))
            end as p_offset_minutes,
            try_cast(substr({column}, -2, 2) as bigint) as p_offset_mm
        from {raw}
    ) fields
) offsets
"""


def event_time_reasons(raw: str, name: str) -> str:
    """dbt's ``event_time_reasons`` over ``with_time``'s columns."""
    return f"""
            when {raw} is null then 'null {name}'
            when {full_match(raw, ISO_NAIVE)} then 'naive {name} (no UTC offset)'
            when not offset_in_range then '{name} offset out of range'
            when parsed_us is null then 'unparseable {name}'
            when parsed_us > ingested_us then '{name} after ingested_at'"""


def minor_units_reasons(
    column: str, name: str, minimum: str | None = ">= 0", applies: str = "true"
) -> str:
    """dbt's ``minor_units_reasons`` (``raw % 1``: see staging.py on ``floor``)."""
    bound = {
        ">= 0": f"\n            when {applies} and {column} < 0 then 'negative {name}'",
        "> 0": f"\n            when {applies} and {column} <= 0 then '{name} not positive'",
        None: "",
    }[minimum]
    return f"""
            when {applies} and {column} is null then 'null {name}'
            when {applies} and (isnan({column}) or abs({column}) = double('infinity'))
                then '{name} is NaN or infinite'{bound}
            when {applies} and {column} % 1 <> 0 then '{name} is not in whole minor units'
            when {applies} and abs({column}) > 1e15 then '{name} out of range'"""


def ledger_sql(raw: str) -> str:
    """stg_bank__ledger over ``raw`` (landing columns + filename, file_row_number)."""
    types = ", ".join(f"'{t}'" for t in LEDGER_EVENT_TYPES)
    derived = ",\n    ".join(f"{expr} as {name}" for name, expr in LEDGER_DERIVED_INPUTS.items())
    snapshot = "event_type = 'balance_snapshot'"
    return f"""
select
    *,
    {derived}
from (
    select
        source_file,
        source_row,
        ledger_event_id,
        account_id,
        event_type,
        case when quarantine_reason is null then try_cast(raw_amount as bigint) end as amount,
        case when quarantine_reason is null then try_cast(raw_balance as bigint) end as balance,
        currency,
        parsed_us as event_us,
        ingested_at,
        ingested_us,
        raw_amount,
        raw_balance,
        raw_event_ts,
        quarantine_reason
    from (
        select
            *,
            case
                when ledger_event_id is null then 'null ledger_event_id'
                when account_id is null then 'null account_id'
                when ingested_at is null then 'null ingested_at'
                when event_type is null then 'null event_type'
                when event_type not in ({types}) then 'unknown event_type'
                when {snapshot} and raw_amount is not null then 'amount on a balance_snapshot'
                when not {snapshot} and raw_balance is not null
                    then 'balance on an event other than balance_snapshot'
                {minor_units_reasons("raw_balance", "balance", None, snapshot)}
                {minor_units_reasons("raw_amount", "amount", ">= 0", f"not {snapshot}")}
                {event_time_reasons("raw_event_ts", "event_ts")}
            end as quarantine_reason
        from (
            select
                regexp_extract(filename, '(ledger/.*)$', 1) as source_file,
                file_row_number as source_row,
                ledger_event_id,
                account_id,
                event_type,
                amount as raw_amount,
                balance as raw_balance,
                currency,
                event_ts as raw_event_ts,
                offset_in_range,
                parsed_us,
                ingested_at,
                unix_micros(ingested_at) as ingested_us
            from ({with_time(raw, "event_ts")}) timed
        ) parsed
    ) validated
) typed
"""


# Income and debt may be missing (not every application states them).
OPTIONAL_INCOME = "stated_income is not null"
OPTIONAL_DEBT = "existing_debt is not null"


def applications_sql(raw: str) -> str:
    """stg_bank__applications over ``raw``."""
    return f"""
select
    source_file,
    source_row,
    application_id,
    account_id,
    applicant_age,
    case when quarantine_reason is null then try_cast(amount as bigint) end as amount,
    term_months,
    case when quarantine_reason is null then try_cast(stated_income as bigint) end
        as stated_income,
    employment_months,
    case when quarantine_reason is null then try_cast(existing_debt as bigint) end
        as existing_debt,
    purpose,
    region,
    months_since_last_default,
    parsed_us as application_us,
    ingested_at,
    ingested_us,
    amount as raw_amount,
    raw_application_ts,
    quarantine_reason
from (
    select
        *,
        case
            when application_id is null then 'null application_id'
            when account_id is null then 'null account_id'
            when ingested_at is null then 'null ingested_at'
            when applicant_age is null then 'null applicant_age'
            when applicant_age <= 0 then 'applicant_age not positive'
            when term_months is null then 'null term_months'
            when term_months <= 0 then 'term_months not positive'
            when employment_months < 0 then 'negative employment_months'
            when months_since_last_default < 0 then 'negative months_since_last_default'
            {minor_units_reasons("amount", "amount", "> 0")}
            {minor_units_reasons("stated_income", "stated_income", ">= 0", OPTIONAL_INCOME)}
            {minor_units_reasons("existing_debt", "existing_debt", ">= 0", OPTIONAL_DEBT)}
            {event_time_reasons("raw_application_ts", "application_ts")}
        end as quarantine_reason
    from (
        select
            regexp_extract(filename, '(applications/.*)$', 1) as source_file,
            file_row_number as source_row,
            *,
            application_ts as raw_application_ts,
            unix_micros(ingested_at) as ingested_us
        from ({with_time(raw, "application_ts")}) timed
    ) parsed
) validated
"""


def credit_outcomes_sql(raw: str) -> str:
    """stg_bank__credit_outcomes over ``raw`` (fraud labels' rules)."""
    return f"""
select
    source_file,
    source_row,
    application_id,
    defaulted,
    label_ts,
    unix_micros(label_ts) as label_us,
    ingested_at,
    unix_micros(ingested_at) as ingested_us,
    case
        when application_id is null then 'null application_id'
        when defaulted is null then 'null defaulted'
        when label_ts is null then 'null label_ts'
        when ingested_at is null then 'null ingested_at'
        when label_ts > ingested_at then 'label_ts after ingested_at'
    end as quarantine_reason
from (
    select
        regexp_extract(filename, '(credit_outcomes/.*)$', 1) as source_file,
        file_row_number as source_row,
        application_id,
        defaulted,
        label_ts,
        ingested_at
    from {raw}
) source
"""


DEDUPED_LEDGER_COLUMNS = (
    "ledger_event_id, account_id, event_type, amount, balance, currency, event_us, "
    "ingested_at, ingested_us, " + ", ".join(LEDGER_DERIVED_INPUTS) + ", source_file"
)
DEDUPED_APPLICATION_COLUMNS = (
    "application_id, account_id, applicant_age, amount, term_months, stated_income, "
    "employment_months, existing_debt, purpose, region, months_since_last_default, "
    "application_us, ingested_at, ingested_us, source_file"
)
DEDUPED_CREDIT_OUTCOME_COLUMNS = (
    "application_id, defaulted, label_ts, label_us, ingested_at, ingested_us"
)
