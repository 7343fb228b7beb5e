{# No row may be dated after the column it must precede (e.g. T <= W). #}
{% test not_after(model, column_name, other) %}
select * from {{ model }} where {{ column_name }} > {{ other }}
{% endtest %}
