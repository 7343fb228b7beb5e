-- Valid loan applications, one per application_id: the first ingested copy
-- wins (ties: landing file, then row), as for transactions.

with

applications as (
    select * from {{ ref('stg_bank__applications') }}
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
    from applications
),

final as (
    select
        application_id,
        account_id,
        applicant_age,
        amount,
        term_months,
        stated_income,
        employment_months,
        existing_debt,
        purpose,
        region,
        months_since_last_default,
        application_ts,
        application_us,
        ingested_at,
        ingested_us,
        source_file
    from ranked
    where delivery_rank = 1
    {% if is_incremental() %}
      and application_id not in (select application_id from {{ this }})
    {% endif %}
)

select * from final
