{# Time helpers: every time column is UTC; arithmetic happens on microseconds. #}

{% macro watermark_us() -%}
    cast({{ var('watermark_us') }} as bigint)
{%- endmacro %}

{% macro previous_watermark_us() -%}
    (select coalesce(max(watermark_us), -1) from {{ ref('transform_runs') }}
     where watermark_us < {{ watermark_us() }})
{%- endmacro %}

{# ISO-8601 with an explicit offset (Z or +HH:MM); anything else is rejected. #}
{% macro iso_with_offset_regex() -%}
    '\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})'
{%- endmacro %}

{% macro iso_naive_regex() -%}
    '\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?'
{%- endmacro %}
