-- One row per transform run (watermark). Built first in every run, so models
-- find "the previous run" as the newest watermark before this one, even when a
-- run is repeated or an earlier one crashed halfway.
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
