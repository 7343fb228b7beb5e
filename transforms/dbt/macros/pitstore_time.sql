{# Time helpers: every time column is UTC; arithmetic happens on microseconds. #}

{% macro watermark_us() -%}
    cast({{ var('watermark_us') }} as bigint)
{%- endmacro %}

{# The previous *completed* run (-1: none), decided by `pitstore transform`:
   a run counts once its summary was written, after its parquet was published. #}
{% macro previous_watermark_us() -%}
    cast({{ var('previous_watermark_us') }} as bigint)
{%- endmacro %}

{# ISO-8601 with an explicit offset (Z or +HH:MM); anything else is rejected. #}
{% macro iso_with_offset_regex() -%}
    '\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})'
{%- endmacro %}

{% macro iso_naive_regex() -%}
    '\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?'
{%- endmacro %}

{# An offset is trusted only inside the range real zones use, -12:00 (Etc/GMT+12)
   to +14:00 (Pacific/Kiritimati), with minutes 00-59: anything else (+99:99,
   +01:60, -30:00) is a broken source clock, quarantined rather than shifted.
   For a string that matched iso_with_offset_regex (its last 6 characters are
   Z or [+-]HH:MM); null for others. Spark: pitstore/transform/spark/staging.py. #}
{% macro utc_offset_in_range(column) -%}
    (right({{ column }}, 1) = 'Z'
     or (try_cast(right({{ column }}, 2) as integer) < 60
         and (case when left(right({{ column }}, 6), 1) = '-' then -1 else 1 end)
             * (try_cast(left(right({{ column }}, 5), 2) as integer) * 60
                + try_cast(right({{ column }}, 2) as integer))
             between -720 and 840))
{%- endmacro %}
