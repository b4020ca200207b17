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

{#- post_hook: a B-tree index on `columns` (in that order) unless the table has one, also on a table
    built before it existed. (Not a named `create index if not exists`: during a full refresh the
    previous table, renamed aside until the hooks ran, still holds that name, and the new table would
    go without.) -#}
{% macro cs_btree_index(columns) -%}
    {%- set relation = this.include(database=False) | string -%}
    {%- set column_list = columns | join(', ') -%}
    do $cs_index$ begin
        if not exists (select 1 from pg_indexes
                       where schemaname = '{{ this.schema }}' and tablename = '{{ this.identifier }}'
                         and indexdef like '%btree ({{ column_list }})') then
            execute 'create index on {{ relation | replace("'", "''") }} ({{ column_list }})';
        end if;
    end $cs_index$
{%- endmacro %}
