{# Validation pieces the staging models share (the transactions model spells
   them out; the ledger, applications and credit outcomes use these). Spark:
   pitstore/transform/spark/staging_credit.py says the same in Spark SQL. #}

{# The instant a string with an explicit, in-range offset names; null otherwise. #}
{% macro offset_ts(column) -%}
    case
        when regexp_full_match({{ column }}, {{ iso_with_offset_regex() }})
            then case
                when {{ utc_offset_in_range(column) }}
                    then try_cast({{ column }} as timestamptz)
            end
    end
{%- endmacro %}

{# Whether the offset of a string matching iso_with_offset_regex is in range; null otherwise. #}
{% macro offset_ok(column) -%}
    case
        when regexp_full_match({{ column }}, {{ iso_with_offset_regex() }})
            then {{ utc_offset_in_range(column) }}
    end
{%- endmacro %}

{# The `when` branches for an event time column, in the transactions' order. #}
{% macro event_time_reasons(raw, name, offset_ok_col, parsed) -%}
            when {{ raw }} is null then 'null {{ name }}'
            when regexp_full_match({{ raw }}, {{ iso_naive_regex() }})
                then 'naive {{ name }} (no UTC offset)'
            when not {{ offset_ok_col }} then '{{ name }} offset out of range'
            when {{ parsed }} is null then 'unparseable {{ name }}'
            when {{ parsed }} > ingested_at then '{{ name }} after ingested_at'
{%- endmacro %}

{# The `when` branches for a minor-units amount that must be present, finite,
   whole, within +-1e15 and at least `min` ('>= 0' or '> 0', or none: signed),
   for the rows where `applies` holds. #}
{% macro minor_units_reasons(column, name, min='>= 0', applies='true') -%}
            when {{ applies }} and {{ column }} is null then 'null {{ name }}'
            when {{ applies }} and cast({{ column }} as varchar) in ('nan', 'inf', '-inf')
                then '{{ name }} is NaN or infinite'
            {% if min == '>= 0' -%}
            when {{ applies }} and {{ column }} < 0 then 'negative {{ name }}'
            {% elif min == '> 0' -%}
            when {{ applies }} and {{ column }} <= 0 then '{{ name }} not positive'
            {% endif -%}
            when {{ applies }} and {{ column }} <> floor({{ column }})
                then '{{ name }} is not in whole minor units'
            when {{ applies }} and abs({{ column }}) > 1e15 then '{{ name }} out of range'
{%- endmacro %}
