{#- post_hook of supplier_engagement_daily: the seasonal index's sufficient statistics (issue 28; DOMAIN.md,
    seasonality) in marts.supplier_engagement_category_sums: per vendor category, as-of day and number
    column of the mart (its contract's integer and numeric columns), the exact numeric sum and the count of
    the non-null values. customer_health learns each scored day's index from the 730 days before it and
    reads these few rows per day instead of aggregating two years of supplier rows on every run (issue 30:
    0.57 s of a daily run at 10,000 suppliers; cs_pipeline/health/seasonal.py).

    Written by the mart's own post-hook, inside its transaction: every day on a full refresh or the mart's
    first build; otherwise the days the run rebuilt and any day of the mart the table lacks (a new table
    after an upgrade, days built by a version without it, rows deleted by hand; the mart's distinct days
    found by a skip scan of its (as_of_date, supplier_id) index, a few milliseconds). So the sums cannot
    lag behind the rows they sum, whichever models a build selects or skips. Long, one row per metric
    (the reader aggregates from the mart any metric the table lacks on a day). -#}
{% macro cs_engagement_category_sums() -%}
    {%- set sums = api.Relation.create(database=this.database, schema=this.schema,
                                       identifier='supplier_engagement_category_sums', type='table') -%}
    {%- set metrics = [] -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(this) if column.is_number() -%}
            {%- do metrics.append(column.name) -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set window = is_incremental() -%}
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
    with {% if window -%}  {#- the mart's days the table lacks: a full build sums every day anyway #}
    recursive mart_days as (
        (select min(as_of_date) as as_of_date from {{ this }})
        union all
        select (select min(t.as_of_date) from {{ this }} as t where t.as_of_date > m.as_of_date)
        from mart_days as m
        where m.as_of_date is not null
    ),

    missing_days as (
        select as_of_date from mart_days where as_of_date is not null
        except
        select distinct as_of_date from {{ sums }}
    ),
    {% endif -%}
    day_sums as (
        select
            vendor_category,
            as_of_date
            {%- for metric in metrics %},
            sum({{ adapter.quote(metric) }}::numeric) as {{ adapter.quote('sum_' ~ loop.index) }},
            count({{ adapter.quote(metric) }}) as {{ adapter.quote('count_' ~ loop.index) }}
            {%- endfor %}
        {%- if window %}
        from (
            select * from {{ this }} where as_of_date between {{ cs_min_date() }} and {{ cs_max_date() }}
            union all
            -- = any(array(...)): probes of the as_of_date index, not a scan of the mart
            select * from {{ this }}
            where as_of_date = any(array(
                select as_of_date from missing_days
                where as_of_date not between {{ cs_min_date() }} and {{ cs_max_date() }}))
        ) as e
        {%- else %}
        from {{ this }}
        {%- endif %}
        where vendor_category is not null
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
