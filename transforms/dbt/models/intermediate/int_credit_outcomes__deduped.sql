-- Valid credit outcomes, one per application_id: the first ingested wins, as for labels.

with

outcomes as (
    select * from {{ ref('stg_bank__credit_outcomes') }}
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
            partition by application_id
            order by ingested_us, source_file, source_row
        ) as delivery_rank
    from outcomes
),

final as (
    select
        application_id,
        defaulted,
        label_ts,
        label_us,
        ingested_at,
        ingested_us
    from ranked
    where delivery_rank = 1
    {% if is_incremental() %}
      and application_id not in (select application_id from {{ this }})
    {% endif %}
)

select * from final
