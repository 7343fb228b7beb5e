-- Loan applications from the landing zone, typed and validated like
-- transactions (amounts in whole minor units, an application time with an
-- explicit offset, not after ingestion). Bad rows say why.

with

source as (
    {% if var('application_files') %}
    select * from read_parquet(
        {{ var('application_files') }},
        filename = true,
        file_row_number = true
    )
    {% else %}
    select
        null::varchar as application_id,
        null::varchar as account_id,
        null::integer as applicant_age,
        null::double as amount,
        null::integer as term_months,
        null::double as stated_income,
        null::integer as employment_months,
        null::double as existing_debt,
        null::varchar as purpose,
        null::varchar as region,
        null::integer as months_since_last_default,
        null::varchar as application_ts,
        null::timestamptz as ingested_at,
        null::varchar as filename,
        null::bigint as file_row_number
    where false
    {% endif %}
),

parsed as (
    select
        regexp_extract(filename, '(applications/.*)$', 1) as source_file,
        file_row_number as source_row,
        * exclude (filename, file_row_number, application_ts),
        application_ts as raw_application_ts,
        {{ offset_ok('application_ts') }} as offset_in_range,
        {{ offset_ts('application_ts') }} as application_at
    from source
),

validated as (
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
            {{ minor_units_reasons('amount', 'amount', min='> 0') }}
            {{ minor_units_reasons(
                'stated_income', 'stated_income', applies='stated_income is not null'
            ) }}
            {{ minor_units_reasons(
                'existing_debt', 'existing_debt', applies='existing_debt is not null'
            ) }}
            {{ event_time_reasons(
                'raw_application_ts', 'application_ts', 'offset_in_range', 'application_at'
            ) }}
        end as quarantine_reason
    from parsed
),

final as (
    select
        source_file,
        source_row,
        application_id,
        account_id,
        applicant_age,
        case when quarantine_reason is null then try_cast(amount as bigint) end as amount,
        term_months,
        case
            when quarantine_reason is null then try_cast(stated_income as bigint)
        end as stated_income,
        employment_months,
        case
            when quarantine_reason is null then try_cast(existing_debt as bigint)
        end as existing_debt,
        purpose,
        region,
        months_since_last_default,
        application_at as application_ts,
        epoch_us(application_at) as application_us,
        ingested_at,
        epoch_us(ingested_at) as ingested_us,
        amount as raw_amount,
        raw_application_ts,
        quarantine_reason
    from validated
)

select * from final
