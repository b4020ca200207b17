-- The seasonal index's sufficient statistics (issue 28; DOMAIN.md, seasonality): per vendor category,
-- as-of day and numeric metric of supplier_engagement_daily, the sum and count of its non-null values.
-- customer_health learns each scored day's index from the 730 days before it: with these it reads a few
-- rows per day instead of aggregating every supplier's rows of two years on every run (issue 30: 0.6 s
-- of a daily run at 10,000 suppliers). Incremental by as-of day like supplier_engagement_daily, over
-- the same window; a first build or a full refresh sums every day.
--
-- Long, not wide: one row per metric, so a metric supplier_engagement_daily gains later simply has no
-- rows for the days built before it, and cs_pipeline.health.seasonal then aggregates it from
-- supplier_engagement_daily instead.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ cs_delete_window('as_of_date') }}",
    tags=['daily'],
    indexes=[{'columns': ['as_of_date', 'metric', 'vendor_category'], 'unique': true}],
) }}
{%- set engagement = ref('supplier_engagement_daily') %}
{#- Every number column of the engagement mart (its contract's integer and numeric columns), read from the
    warehouse when the model runs (at parse time there is none to read). -#}
{%- set metrics = [] %}
{%- if execute %}
    {%- for column in adapter.get_columns_in_relation(engagement) if column.is_number() %}
        {%- do metrics.append(column.name) %}
    {%- endfor %}
{%- endif %}

-- Sums over numeric: exact whatever the order the rows are read in, so a day's sum has the same digits
-- from a daily run, a re-run or a full refresh.
with sums as (
    select
        vendor_category,
        as_of_date
        {%- for metric in metrics %},
        sum({{ adapter.quote(metric) }}::numeric) as {{ adapter.quote('sum_' ~ loop.index) }},
        count({{ adapter.quote(metric) }}) as {{ adapter.quote('count_' ~ loop.index) }}
        {%- endfor %}
    from {{ engagement }}
    where {{ cs_in_window('as_of_date') }} and vendor_category is not null
    group by 1, 2
)

select s.vendor_category, s.as_of_date, m.metric, m.value_sum, m.value_count
from sums as s
cross join lateral (
    values
    {%- for metric in metrics %}
        ('{{ metric | replace("'", "''") }}'::text, s.{{ adapter.quote('sum_' ~ loop.index) }}, s.{{ adapter.quote('count_' ~ loop.index) }}){{ ',' if not loop.last }}
    {%- endfor %}
) as m (metric, value_sum, value_count)
