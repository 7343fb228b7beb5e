-- Valid ledger events, one row per ledger_event_id: the first ingested copy
-- wins (ties broken by landing file and row), as for transactions. Incremental:
-- a run appends the ids it is the first to see; a later copy, even a restated
-- one, never replaces the copy already here.

with

ledger as (
    select * from {{ ref('stg_bank__ledger') }}
    where quarantine_reason is null
      and ingested_us <= {{ watermark_us() }}
    {% if is_incremental() %}
      and ingested_us > {{ previous_watermark_us() }}
    {% endif %}
),

ranked as (
    select
        *,
        row_number() over (
            partition by ledger_event_id
            order by ingested_us, source_file, source_row
        ) as delivery_rank
    from ledger
),

final as (
    select
        ledger_event_id,
        account_id,
        event_type,
        amount,
        balance,
        currency,
        event_ts,
        event_us,
        ingested_at,
        ingested_us,
        {{ ledger_derived_input_names() }},
        source_file
    from ranked
    where delivery_rank = 1
    {% if is_incremental() %}
      and ledger_event_id not in (select ledger_event_id from {{ this }})
    {% endif %}
)

select * from final
