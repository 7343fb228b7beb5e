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
