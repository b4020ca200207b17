{#- post_hook of the incremental models whose window delete and window tests filter on `column`: a BRIN
    index on it, also on tables built before it existed (dbt creates `indexes` only with a new table), and
    the page ranges this run appended summarized at once (brin_summarize_new_values). Rows arrive by window,
    so BRIN fits, and unlike a B-tree it costs next to nothing per inserted row. Without it, each daily run's
    delete and tests read the whole table (issue 18). Ranges that are not summarized are read by every
    query on the index, whatever its days: PostgreSQL summarizes them only when (auto)vacuum visits the
    table, which for an append-only table of 11 M rows waits for some 2 M new rows, about 100 daily runs at
    10,000 suppliers, and after a backfill the tail of its last window was read by every lookup of a day
    (int_supplier_client_visits: 23,214 pages, 213 ms, for one day's 20,939 rows; summarized: 174 pages,
    3 ms). BRIN's own `autosummarize` option queues the same work for autovacuum's workers, to be done
    later; here it is done before the run's downstream models read the table. -#}
{% macro cs_window_index(column) -%}
    {%- if model.config.materialized == 'incremental' -%}
    {#- Found by table and column, not by name: after a full refresh the previous table, renamed aside until
        the hooks ran, still holds a named index, and the new table would go without. -#}
    {%- set relation = (this.include(database=False) | string) | replace("'", "''") -%}
    {%- set find -%}
        select i.indexrelid::regclass from pg_index i
        join pg_class ic on ic.oid = i.indexrelid join pg_am am on am.oid = ic.relam
        join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
        where i.indrelid = '{{ relation }}'::regclass and am.amname = 'brin' and a.attname = '{{ column | replace("'", "''") }}'
        limit 1
    {%- endset %}
    do $cs_brin$
    declare
        found regclass;
    begin
        {{ find }} into found;
        if found is null then
            execute 'create index on {{ relation }} using brin ({{ adapter.quote(column) | replace("'", "''") }})';
            {{ find }} into found;
        end if;
        perform brin_summarize_new_values(found);
    end $cs_brin$
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
