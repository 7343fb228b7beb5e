-- Valid transactions, one row per transaction_id: the first ingested copy wins
-- (ties broken by landing file and row, so every engine picks the same copy).
-- Incremental: a run appends the ids it is the first to see. A duplicate
-- delivered later never replaces the copy already here.

with

transactions as (
    select * from {{ ref('stg_bank__transactions') }}
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
    from transactions
),

final as (
    select
        transaction_id,
        account_id,
        card_id,
        merchant_id,
        merchant_category,
        amount,
        currency,
        channel,
        country,
        device_id,
        event_ts,
        event_us,
        ingested_at,
        ingested_us,
        is_foreign,
        is_card_not_present,
        source_file
    from ranked
    where delivery_rank = 1
    {% if is_incremental() %}
      and transaction_id not in (select transaction_id from {{ this }})
    {% endif %}
)

select * from final
