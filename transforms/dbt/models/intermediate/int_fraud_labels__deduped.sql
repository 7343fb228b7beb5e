-- Valid fraud labels, one per transaction_id: the first ingested label wins.

with

labels as (
    select * from {{ ref('stg_bank__fraud_labels') }}
    where quarantine_reason is null
      and ingested_us <= {{ watermark_us() }}
    {% if is_incremental() %}
      -- Copies known at the previous run were ranked then; only newer ones can add ids.
      and ingested_us > {{ previous_watermark_us() }}
    {% endif %}
),

ranked as (
    select
        *,
        row_number() over (
            partition by transaction_id
            order by ingested_us, source_file, source_row
        ) as delivery_rank
    from labels
),

final as (
    select
        transaction_id,
        is_fraud,
        label_ts,
        label_us,
        ingested_at,
        ingested_us
    from ranked
    where delivery_rank = 1
    {% if is_incremental() %}
      and transaction_id not in (select transaction_id from {{ this }})
    {% endif %}
)

select * from final
