-- Every bad raw event, with its reason, recorded by the first run that saw it.
-- Nothing here ever reaches an aggregate. `transaction_id` holds the row's id in
-- its dataset (ledger_event_id, application_id for the credit datasets).
{{ config(incremental_strategy='append') }}

with

bad_transactions as (
    select
        'transactions' as dataset,
        source_file,
        source_row,
        transaction_id,
        quarantine_reason as reason,
        to_json(struct_pack(
            transaction_id, account_id, merchant_id, raw_amount, raw_event_ts, ingested_at
        )) as raw
    from {{ ref('stg_bank__transactions') }}
    where quarantine_reason is not null
      and (ingested_us is null or ingested_us <= {{ watermark_us() }})
    {% if is_incremental() %}
      and (ingested_us is null or ingested_us > {{ previous_watermark_us() }})
    {% endif %}
),

bad_labels as (
    select
        'labels' as dataset,
        source_file,
        source_row,
        transaction_id,
        quarantine_reason as reason,
        to_json(struct_pack(transaction_id, is_fraud, label_ts, ingested_at)) as raw
    from {{ ref('stg_bank__fraud_labels') }}
    where quarantine_reason is not null
      and (ingested_us is null or ingested_us <= {{ watermark_us() }})
    {% if is_incremental() %}
      and (ingested_us is null or ingested_us > {{ previous_watermark_us() }})
    {% endif %}
),

bad_ledger as (
    select
        'ledger' as dataset,
        source_file,
        source_row,
        ledger_event_id as transaction_id,
        quarantine_reason as reason,
        to_json(struct_pack(
            ledger_event_id, account_id, event_type, raw_amount, raw_balance, raw_event_ts,
            ingested_at
        )) as raw
    from {{ ref('stg_bank__ledger') }}
    where quarantine_reason is not null
      and (ingested_us is null or ingested_us <= {{ watermark_us() }})
    {% if is_incremental() %}
      and (ingested_us is null or ingested_us > {{ previous_watermark_us() }})
    {% endif %}
),

bad_applications as (
    select
        'applications' as dataset,
        source_file,
        source_row,
        application_id as transaction_id,
        quarantine_reason as reason,
        to_json(struct_pack(
            application_id, account_id, applicant_age, raw_amount, term_months,
            raw_application_ts, ingested_at
        )) as raw
    from {{ ref('stg_bank__applications') }}
    where quarantine_reason is not null
      and (ingested_us is null or ingested_us <= {{ watermark_us() }})
    {% if is_incremental() %}
      and (ingested_us is null or ingested_us > {{ previous_watermark_us() }})
    {% endif %}
),

bad_credit_outcomes as (
    select
        'credit_outcomes' as dataset,
        source_file,
        source_row,
        application_id as transaction_id,
        quarantine_reason as reason,
        to_json(struct_pack(application_id, defaulted, label_ts, ingested_at)) as raw
    from {{ ref('stg_bank__credit_outcomes') }}
    where quarantine_reason is not null
      and (ingested_us is null or ingested_us <= {{ watermark_us() }})
    {% if is_incremental() %}
      and (ingested_us is null or ingested_us > {{ previous_watermark_us() }})
    {% endif %}
),

{% if var('drifted_files') %}
drifted as (
    -- A file whose schema differs from the contract is quarantined whole:
    -- guessing what a renamed or retyped column means is how money goes missing.
    select
        regexp_extract(filename, '(transactions|ledger)/ingest_date=', 1) as dataset,
        regexp_extract(filename, '((transactions|ledger)/.*)$', 1) as source_file,
        file_row_number as source_row,
        null::varchar as transaction_id,
        'schema drift in landing file' as reason,
        to_json(d) as raw
    from read_parquet(
        {{ var('drifted_files') }}, union_by_name = true, filename = true, file_row_number = true
    ) d
),
{% endif %}

all_bad as (
    select * from bad_transactions
    union all
    select * from bad_labels
    union all
    select * from bad_ledger
    union all
    select * from bad_applications
    union all
    select * from bad_credit_outcomes
    {% if var('drifted_files') %}
    union all
    select * from drifted
    {% endif %}
),

final as (
    select
        b.*,
        make_timestamptz({{ watermark_us() }}) as first_seen_watermark
    from all_bad b
    {% if is_incremental() %}
    where not exists (
        select 1 from {{ this }} q
        where q.source_file = b.source_file and q.source_row = b.source_row
    )
    {% endif %}
)

select * from final
