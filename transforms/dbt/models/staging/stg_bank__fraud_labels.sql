-- Fraud labels (chargebacks) from the landing zone, validated like transactions.
-- A label has its own time: label_ts (when the bank learned the outcome) and
-- ingested_at (when the landing zone received it).

with

source as (
    {% if var('label_files') %}
    select * from read_parquet(
        {{ var('label_files') }},
        filename = true,
        file_row_number = true
    )
    {% else %}
    -- No label has landed yet (early in the landing zone's life): an empty, typed source.
    select
        null::varchar as transaction_id,
        null::boolean as is_fraud,
        null::timestamptz as label_ts,
        null::timestamptz as ingested_at,
        null::varchar as filename,
        null::bigint as file_row_number
    where false
    {% endif %}
),

validated as (
    select
        regexp_extract(filename, '(labels/.*)$', 1) as source_file,
        file_row_number as source_row,
        transaction_id,
        is_fraud,
        label_ts,
        ingested_at,
        case
            when transaction_id is null then 'null transaction_id'
            when is_fraud is null then 'null is_fraud'
            when label_ts is null then 'null label_ts'
            when ingested_at is null then 'null ingested_at'
            when label_ts > ingested_at then 'label_ts after ingested_at'
        end as quarantine_reason
    from source
),

final as (
    select
        source_file,
        source_row,
        transaction_id,
        is_fraud,
        label_ts,
        epoch_us(label_ts) as label_us,
        ingested_at,
        epoch_us(ingested_at) as ingested_us,
        quarantine_reason
    from validated
)

select * from final
