{#- Incremental view maintenance of rolling sums (supplier_engagement_daily's daily path, issue 30): an
    n-day sum on as-of day D is the stored sum of min_date - 1, plus the rows of [min_date, D] (entering
    its window), minus those of [min_date - n, D - n] (leaving it). `rows` is the alias of the activity
    rows joined to the as-of day `day` (a date expression); `stored` the stored sum of min_date - 1. -#}

{#- Predicate: the row entered the window of as-of day `day` during this run's window. -#}
{% macro cs_entering(rows, day) -%}
    {{ rows }}.activity_date between {{ cs_min_date() }} and {{ day }}
{%- endmacro %}

{#- Predicate: the row left the n-day window of as-of day `day` during this run's window. -#}
{% macro cs_leaving(rows, day, n) -%}
    {{ rows }}.activity_date between {{ cs_min_date() }} - {{ n }} and {{ day }} - {{ n }}
{%- endmacro %}

{#- The n-day sum of `column`, carried forward from `stored`. -#}
{% macro cs_moved_sum(column, n, stored, rows='a', day='d.as_of_date') -%}
    {{ stored }} + coalesce(sum({{ rows }}.{{ column }}) filter (where {{ cs_entering(rows, day) }}), 0)
        - coalesce(sum({{ rows }}.{{ column }}) filter (where {{ cs_leaving(rows, day, n) }}), 0)
{%- endmacro %}

{#- The n-day count of active days (events_total > 0), carried forward from `stored`. -#}
{% macro cs_moved_count(n, stored, rows='a', day='d.as_of_date') -%}
    {{ stored }} + count(*) filter (where {{ cs_entering(rows, day) }} and {{ rows }}.events_total > 0)
        - count(*) filter (where {{ cs_leaving(rows, day, n) }} and {{ rows }}.events_total > 0)
{%- endmacro %}
