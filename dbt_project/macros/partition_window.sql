{#- The partition window of a daily run.

    Dagster sets the environment variables CS_PIPELINE_DBT_MIN_DATE / CS_PIPELINE_DBT_MAX_DATE
    (inclusive UTC days, YYYY-MM-DD) for the one dbt invocation. By hand (and in dbt unit tests),
    --vars '{"min_date": "...", "max_date": "..."}' works too and wins over the environment. The
    environment is read only when executing, never while parsing, so the window is not part of dbt's
    parse state: partial parsing holds from one run to the next (issue 18), whereas a change of --vars
    makes dbt re-parse the whole project.
    Incremental models process [min_date, max_date] (plus the look-back their rolling windows need) and
    first delete that window from their table, so a re-run replaces it. A full refresh (or a build
    without vars) processes every day up to max_date. -#}

{% macro cs_date_var(name) -%}
    {%- set value = var(name, none) -%}
    {%- if (value is none or value == '') and execute -%}
        {%- set value = env_var('CS_PIPELINE_DBT_' ~ (name | upper), '') -%}
    {%- endif -%}
    {%- if value is none or value == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value | string) -%}
        {{ exceptions.raise_compiler_error("CS_PIPELINE_DBT_" ~ (name | upper) ~ " (or var " ~ name ~ ") must be a day YYYY-MM-DD, got " ~ value) }}
    {%- endif -%}
    {{ return(value | string) }}
{%- endmacro %}

{#- SQL date literal for the window's first day (or a day before all data). -#}
{% macro cs_min_date() -%}
    {%- set value = cs_date_var('min_date') -%}
    {%- if value is none -%}date '1900-01-01'{%- else -%}date '{{ value }}'{%- endif -%}
{%- endmacro %}

{#- SQL date literal for the window's last day (or a day after all data). -#}
{% macro cs_max_date() -%}
    {%- set value = cs_date_var('max_date') -%}
    {%- if value is none -%}date '2999-12-31'{%- else -%}date '{{ value }}'{%- endif -%}
{%- endmacro %}

{#- Predicate: `column` falls in the days this run processes, with `lookback_days` before the window
    (for rolling windows). A full refresh processes everything up to max_date. -#}
{% macro cs_in_window(column, lookback_days=0) -%}
    {%- if is_incremental() -%}
        {{ column }} between {{ cs_min_date() }} - {{ lookback_days }} and {{ cs_max_date() }}
    {%- else -%}
        {{ column }} <= {{ cs_max_date() }}
    {%- endif -%}
{%- endmacro %}

{#- pre_hook of incremental models: delete the window this run rebuilds, inside the model's
    transaction, so that a re-run replaces its days exactly. -#}
{% macro cs_delete_window(column) -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ column }} between {{ cs_min_date() }} and {{ cs_max_date() }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- post_hook of every model: refresh the planner's statistics of a table the run just (re)built.
    PostgreSQL's autovacuum analyzes a new table only after a delay, and until then the planner guesses
    (issue 18: a query on fresh tables ran for minutes with nested loops over every partition). A rebuilt
    table is analyzed always; an incremental model when ops.statistics_stale says its statistics are
    stale (created with the schemas by cs_pipeline.core.db.ensure_schemas, which also serves the Python
    writes): the rows changed since its last ANALYZE (this run's own included) exceed
    autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x its rows, as autovacuum decides, or the
    table has no B-tree index leading with a date (then the planner cannot estimate a new day past its
    histogram: the BRIN-indexed intermediate tables are analyzed every run). So a daily run adding a 365th
    of a mart does not spend a second re-sampling it. -#}
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

{#- post_hook of the incremental models whose window delete and window tests filter on `column`: a BRIN
    index on it, also on tables built before it existed (dbt creates `indexes` only with a new table).
    Rows arrive in day order, so BRIN fits, and unlike a B-tree it costs next to nothing per inserted row.
    Without it, each daily run's delete and tests read the whole table (issue 18). -#}
{% macro cs_window_index(column) -%}
    create index if not exists {{ adapter.quote(this.identifier ~ '__' ~ column ~ '_brin') }} on {{ this }} using brin ({{ adapter.quote(column) }})
{%- endmacro %}
