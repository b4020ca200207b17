{#- post_hook of the incremental models whose window delete and window tests filter on `column`: a BRIN
    index on it, also on tables built before it existed (dbt creates `indexes` only with a new table).
    Rows arrive in day order, so BRIN fits, and unlike a B-tree it costs next to nothing per inserted row.
    Without it, each daily run's delete and tests read the whole table (issue 18). -#}
{% macro cs_window_index(column) -%}
    {%- if model.config.materialized == 'incremental' -%}
    create index if not exists {{ adapter.quote(this.identifier ~ '__' ~ column ~ '_brin') }} on {{ this }} using brin ({{ adapter.quote(column) }})
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
