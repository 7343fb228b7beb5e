-- The account ledger from the landing zone (salary and other credits, direct
-- debits, fees, missed and returned payments, end-of-day balances), typed,
-- normalised to UTC microseconds and validated like transactions: valid rows
-- have a null quarantine_reason, bad ones say why.

with

source as (
    {% if var('ledger_files') %}
    select * from read_parquet(
        {{ var('ledger_files') }},
        filename = true,
        file_row_number = true
    )
    {% else %}
    -- No ledger has landed (a fraud-only landing zone): an empty, typed source.
    select
        null::varchar as ledger_event_id,
        null::varchar as account_id,
        null::varchar as event_type,
        null::double as amount,
        null::double as balance,
        null::varchar as currency,
        null::varchar as event_ts,
        null::timestamptz as ingested_at,
        null::varchar as filename,
        null::bigint as file_row_number
    where false
    {% endif %}
),

parsed as (
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
        {{ offset_ok('event_ts') }} as offset_in_range,
        {{ offset_ts('event_ts') }} as event_at,
        ingested_at
    from source
),

validated as (
    select
        *,
        case
            when ledger_event_id is null then 'null ledger_event_id'
            when account_id is null then 'null account_id'
            when ingested_at is null then 'null ingested_at'
            when event_type is null then 'null event_type'
            when event_type not in ({{ ledger_event_types() }}) then 'unknown event_type'
            -- A snapshot carries a signed balance and no amount; every other
            -- event an amount (its type says the direction) and no balance.
            when event_type = 'balance_snapshot' and raw_amount is not null
                then 'amount on a balance_snapshot'
            when event_type <> 'balance_snapshot' and raw_balance is not null
                then 'balance on an event other than balance_snapshot'
            {{ minor_units_reasons(
                'raw_balance', 'balance', min=none, applies="event_type = 'balance_snapshot'"
            ) }}
            {{ minor_units_reasons(
                'raw_amount', 'amount', applies="event_type <> 'balance_snapshot'"
            ) }}
            {{ event_time_reasons('raw_event_ts', 'event_ts', 'offset_in_range', 'event_at') }}
        end as quarantine_reason
    from parsed
),

typed as (
    select
        *,
        case when quarantine_reason is null then try_cast(raw_amount as bigint) end as amount,
        case when quarantine_reason is null then try_cast(raw_balance as bigint) end as balance
    from validated
),

final as (
    select
        source_file,
        source_row,
        ledger_event_id,
        account_id,
        event_type,
        amount,
        balance,
        currency,
        event_at as event_ts,
        epoch_us(event_at) as event_us,
        ingested_at,
        epoch_us(ingested_at) as ingested_us,
        {{ ledger_derived_inputs() }},
        raw_amount,
        raw_balance,
        raw_event_ts,
        quarantine_reason
    from typed
)

select * from final
