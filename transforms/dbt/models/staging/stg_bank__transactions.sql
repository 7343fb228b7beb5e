-- Raw card transactions from the landing zone, typed, normalised to UTC
-- microseconds and validated. Every raw row stays here: valid rows have a null
-- quarantine_reason, bad ones say why (they go to quarantine_events, never to
-- an aggregate). No watermark filter here: downstream models apply it.

with

source as (
    {% if var('transaction_files') %}
    select * from read_parquet(
        {{ var('transaction_files') }},
        filename = true,
        file_row_number = true
    )
    {% else %}
    -- No card transaction has landed by W (a run over ledger history that
    -- predates the card feed, or nothing new since the previous run): an
    -- empty, typed source.
    select
        null::varchar as transaction_id,
        null::varchar as account_id,
        null::varchar as card_id,
        null::varchar as merchant_id,
        null::varchar as merchant_category,
        null::double as amount,
        null::varchar as currency,
        null::varchar as channel,
        null::varchar as country,
        null::varchar as device_id,
        null::varchar as event_ts,
        null::timestamptz as ingested_at,
        null::varchar as filename,
        null::bigint as file_row_number
    where false
    {% endif %}
),

parsed as (
    select
        -- The partition path is stable wherever the landing zone lives.
        regexp_extract(filename, '(transactions/.*)$', 1) as source_file,
        file_row_number as source_row,
        transaction_id,
        account_id,
        card_id,
        merchant_id,
        merchant_category,
        amount as raw_amount,
        currency,
        channel,
        country,
        device_id,
        event_ts as raw_event_ts,
        -- Only an explicit offset makes a time unambiguous; naive strings are
        -- rejected below rather than guessed in some local zone, and so are
        -- offsets no zone uses (DuckDB would read +99:99 as 100 h 39 min).
        case
            when regexp_full_match(event_ts, {{ iso_with_offset_regex() }})
                then {{ utc_offset_in_range('event_ts') }}
        end as offset_in_range,
        case
            when regexp_full_match(event_ts, {{ iso_with_offset_regex() }})
                then case
                    when {{ utc_offset_in_range('event_ts') }}
                        then try_cast(event_ts as timestamptz)
                end
        end as event_at,
        ingested_at
    from source
),

validated as (
    select
        *,
        case
            when transaction_id is null then 'null transaction_id'
            when account_id is null then 'null account_id'
            when merchant_id is null then 'null merchant_id'
            when ingested_at is null then 'null ingested_at'
            when raw_amount is null then 'null amount'
            -- Not isnan()/isinf(): parquet min/max statistics leave NaN out, and DuckDB
            -- folds isnan() to false from them when it reads a single file (as an
            -- incremental run often does), letting a NaN amount through.
            when cast(raw_amount as varchar) in ('nan', 'inf', '-inf')
                then 'amount is NaN or infinite'
            when raw_amount < 0 then 'negative amount'
            when raw_amount <> floor(raw_amount) then 'amount is not in whole minor units'
            when raw_amount > 1e15 then 'amount out of range'
            when raw_event_ts is null then 'null event_ts'
            when regexp_full_match(raw_event_ts, {{ iso_naive_regex() }})
                then 'naive event_ts (no UTC offset)'
            when not offset_in_range then 'event_ts offset out of range'
            when event_at is null then 'unparseable event_ts'
            when event_at > ingested_at then 'event_ts after ingested_at'
        end as quarantine_reason
    from parsed
),

final as (
    select
        source_file,
        source_row,
        transaction_id,
        account_id,
        card_id,
        merchant_id,
        merchant_category,
        case when quarantine_reason is null then try_cast(raw_amount as bigint) end as amount,
        currency,
        channel,
        country,
        device_id,
        event_at as event_ts,
        epoch_us(event_at) as event_us,
        ingested_at,
        epoch_us(ingested_at) as ingested_us,
        {{ derived_inputs() }},
        raw_amount,
        raw_event_ts,
        quarantine_reason
    from validated
)

select * from final
