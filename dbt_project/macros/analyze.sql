{#- post_hook of every model: refresh the planner's statistics of a table the run just (re)built.
    PostgreSQL's autovacuum analyzes a new table only after a delay, and until then the planner guesses
    (issue 18: a query on fresh tables ran for minutes with nested loops over every partition). A rebuilt
    table is analyzed always; an incremental model when ops.statistics_stale says its statistics are
    stale (created with the schemas by cs_pipeline.core.db.ensure_schemas, which also serves the Python
    writes): the rows changed since its last ANALYZE (this run's own included) exceed
    autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x its rows, as autovacuum decides, or the
    table has no B-tree index leading with a date (then the planner cannot estimate a new day past its
    histogram; the intermediate tables have one, cs_window_index). So a daily run adding a 365th of a mart
    or of an intermediate table does not spend a second re-sampling it. -#}
{% macro cs_analyze() -%}
    {%- if model.config.materialized == 'table' or (model.config.materialized == 'incremental' and not is_incremental()) -%}
        analyze {{ this }}
    {%- elif model.config.materialized == 'incremental' -%}
        {%- set relation = this.include(database=False) | string -%}
        do $cs_analyze$ begin
            if ops.statistics_stale('{{ relation | replace("'", "''") }}'::regclass) then
                analyze {{ relation }};
            end if;
        end $cs_analyze$
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
