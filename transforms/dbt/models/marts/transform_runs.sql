-- One row per transform run dbt executed (its watermark): an audit trail.
-- Which run counts as "previous" is decided outside dbt, from the completed
-- runs' summaries (see pitstore/transform.py), so a crashed run never does.
{{ config(unique_key=['watermark_us']) }}

with

this_run as (
    select
        {{ watermark_us() }} as watermark_us,
        make_timestamptz({{ watermark_us() }}) as watermark
),

final as (
    select * from this_run
)

select * from final
