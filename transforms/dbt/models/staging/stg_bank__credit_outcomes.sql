-- Outcomes of booked loans (did it default within 12 months), validated like
-- fraud labels: an outcome has its own time, label_ts, and ingested_at.

with

source as (
    {% if var('credit_outcome_files') %}
    select * from read_parquet(
        {{ var('credit_outcome_files') }},
        filename = true,
        file_row_number = true
    )
    {% else %}
    select
        null::varchar as application_id,
        null::boolean as defaulted,
        null::timestamptz as label_ts,
        null::timestamptz as ingested_at,
        null::varchar as filename,
        null::bigint as file_row_number
    where false
    {% endif %}
),

validated as (
    select
        regexp_extract(filename, '(credit_outcomes/.*)$', 1) as source_file,
        file_row_number as source_row,
        application_id,
        defaulted,
        label_ts,
        ingested_at,
        case
            when application_id is null then 'null application_id'
            when defaulted is null then 'null defaulted'
            when label_ts is null then 'null label_ts'
            when ingested_at is null then 'null ingested_at'
            when label_ts > ingested_at then 'label_ts after ingested_at'
        end as quarantine_reason
    from source
)

select
    source_file,
    source_row,
    application_id,
    defaulted,
    label_ts,
    epoch_us(label_ts) as label_us,
    ingested_at,
    epoch_us(ingested_at) as ingested_us,
    quarantine_reason
from validated
