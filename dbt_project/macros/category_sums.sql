{#- post_hook of supplier_engagement_daily: the seasonal index's sufficient statistics (issue 28; DOMAIN.md,
    seasonality) in marts.supplier_engagement_category_sums: per vendor category, as-of day and number
    column of the mart (its contract's integer and numeric columns), the exact numeric sum and the count of
    the non-null values. customer_health learns each scored day's index from the 730 days before it and
    reads these few rows per day instead of aggregating two years of supplier rows on every run (issue 30:
    0.57 s of a daily run at 10,000 suppliers; cs_pipeline/health/seasonal.py).

    Written by the mart's own post-hook, inside its transaction, for the days the run rebuilt (all of them
    on a full refresh, on the mart's first build and when the table is new): the sums cannot lag behind
    the rows they sum, whichever models a build selects or skips. Long, one row per metric: a column the
    mart gains later has no rows for days built before it, and the reader then aggregates it from the
    mart instead. -#}
{% macro cs_engagement_category_sums() -%}
    {%- set sums = api.Relation.create(database=this.database, schema=this.schema,
                                       identifier='supplier_engagement_category_sums', type='table') -%}
    {%- set metrics = [] -%}
    {%- set existed = false -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(this) if column.is_number() -%}
            {%- do metrics.append(column.name) -%}
        {%- endfor -%}
        {%- set existed = adapter.get_relation(sums.database, sums.schema, sums.identifier) is not none -%}
    {%- endif -%}
    {%- set window = is_incremental() and existed -%}
    create table if not exists {{ sums }} (
        vendor_category text not null,
        as_of_date date not null,
        metric text not null,
        value_sum numeric,
        value_count bigint not null,
        primary key (as_of_date, metric, vendor_category)
    );
    {% if window -%}
    delete from {{ sums }} where as_of_date between {{ cs_min_date() }} and {{ cs_max_date() }};
    {%- else -%}
    truncate {{ sums }};
    {%- endif %}
    {% if metrics -%}
    insert into {{ sums }} (vendor_category, as_of_date, metric, value_sum, value_count)
    with day_sums as (
        select
            vendor_category,
            as_of_date
            {%- for metric in metrics %},
            sum({{ adapter.quote(metric) }}::numeric) as {{ adapter.quote('sum_' ~ loop.index) }},
            count({{ adapter.quote(metric) }}) as {{ adapter.quote('count_' ~ loop.index) }}
            {%- endfor %}
        from {{ this }}
        where vendor_category is not null
          {%- if window %} and as_of_date between {{ cs_min_date() }} and {{ cs_max_date() }}{% endif %}
        group by 1, 2
    )
    select s.vendor_category, s.as_of_date, m.metric, m.value_sum, m.value_count
    from day_sums as s
    cross join lateral (
        values
        {%- for metric in metrics %}
            ('{{ metric | replace("'", "''") }}'::text, s.{{ adapter.quote('sum_' ~ loop.index) }}, s.{{ adapter.quote('count_' ~ loop.index) }}){{ ',' if not loop.last }}
        {%- endfor %}
    ) as m (metric, value_sum, value_count)
    {%- else -%}
    select 1
    {%- endif %}
{%- endmacro %}
