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

{#- The window's data tests: a test's `where: "<column> >= __cs_window_start__"` (the YAML of the daily
    models) checks the rows from the window's first day on, so a daily build tests its own days, not all
    history; without a window, every row. dbt renders a test's `where` for every test through
    get_where_subquery (dbt's own hook for custom filter logic; its parser allows no project macro in the
    YAML itself), so the window's rule lives here once instead of in each YAML filter. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- set where = where | replace('__cs_window_start__', cs_min_date() | string | trim) -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
