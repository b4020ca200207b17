{#- post_hook of the incremental models whose window delete and window tests filter on `column`: a B-tree
    index on it (cs_btree_index), also on tables built before it existed, and the BRIN index earlier
    versions kept there dropped. The B-tree costs more per appended row than BRIN did, and pays it back
    on every daily run (issue 30, measured in docs/performance.md): the planner reads a new day's bounds
    from it (PostgreSQL's get_actual_variable_range), so these tables are analyzed only when
    ops.statistics_stale finds them stale, not every run (the four ANALYZEs took 2.5 s of a
    10,000-supplier daily run); and a day's lookup reads that day's rows, whereas BRIN ranges cover every
    page a day's rows went to, which after a re-run (a delete, then rows in the freed space) meant 26,013
    pages for one day of int_supplier_client_visits. Without an index on the column, each daily run's
    delete and tests would read the whole table (issue 18). -#}
{% macro cs_window_index(column) -%}
    {%- if model.config.materialized == 'incremental' -%}
    {%- set relation = (this.include(database=False) | string) | replace("'", "''") -%}
    do $cs_window_index$
    declare
        legacy regclass;
    begin
        for legacy in
            select i.indexrelid::regclass from pg_index i
            join pg_class ic on ic.oid = i.indexrelid join pg_am am on am.oid = ic.relam
            join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
            where i.indrelid = '{{ relation }}'::regclass and am.amname = 'brin'
              and a.attname = '{{ column | replace("'", "''") }}'
        loop
            execute format('drop index %s', legacy);
        end loop;
    end $cs_window_index$;
    {{ cs_btree_index([column]) }}
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
