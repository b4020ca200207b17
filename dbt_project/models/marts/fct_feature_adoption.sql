-- One row per supplier (latest snapshot) and catalogue feature, as of the newest processed day:
-- first and last use, uses and active days in the last 7/30/90 days, and the adoption flag per the
-- catalogue rule (used on at least adoption_min_active_days distinct days in adoption_window_days).
-- A table, rebuilt every run; first and last use carry over from the stored table (see history).
{{ config(materialized='table', tags=['daily']) }}

with as_of as (
    select
        {% if cs_date_var('max_date') is not none -%}
        {{ cs_max_date() }}
        {%- else -%}
        coalesce((select max(activity_date) from {{ ref('int_supplier_feature_days') }}), current_date)
        {%- endif %} as as_of_date
),

suppliers as (
    select supplier_id from {{ ref('stg_wedsync__suppliers') }}
),

catalogue as (
    select * from {{ ref('int_feature_catalogue_features') }}
),

feature_days as not materialized (
    select f.supplier_id, f.feature, f.activity_date, f.uses
    from {{ ref('int_supplier_feature_days') }} as f, as_of
    where f.activity_date <= as_of.as_of_date
),

{#- First and last use. A daily run does not re-read all history (issue 18: 9 s a run at 10,000 suppliers
    x 365 days): days before its window did not change, so the stored table (as of the day before the
    window or later) gives the first use when it is before the window, and the last use when the window
    has none and the stored one is before it; a stored last use inside the window that the rebuilt days no
    longer hold is looked up before the window. With no stored table as of min_date - 1 or later, a full
    refresh, or no window, every day is read. -#}
{%- set stored = adapter.get_relation(this.database, this.schema, this.identifier) if (execute and this is not none) else none -%}
{%- set carry = stored is not none and not flags.FULL_REFRESH and cs_date_var('min_date') is not none %}
{% if carry -%}
carried as (
    select coalesce((select max(as_of_date) from {{ this }}) >= {{ cs_min_date() }} - 1, false) as ok
),

window_history as (
    select supplier_id, feature, min(activity_date) as first_used_date, max(activity_date) as last_used_date
    from feature_days
    where activity_date >= {{ cs_min_date() }}
    group by 1, 2
),

stored as (
    select supplier_id, feature, first_used_date, last_used_date
    from {{ this }}
    where (select ok from carried) and first_used_date is not null
),

stale as (
    select s.supplier_id, s.feature
    from stored as s
    left join window_history as w using (supplier_id, feature)
    where s.last_used_date >= {{ cs_min_date() }} and w.supplier_id is null
),

stale_last as (
    select f.supplier_id, f.feature, max(f.activity_date) as last_used_date
    from {{ ref('int_supplier_feature_days') }} as f
    join stale as s using (supplier_id, feature)
    where f.activity_date < {{ cs_min_date() }}
    group by 1, 2
),

history as (
    select
        supplier_id,
        feature,
        case when s.first_used_date < {{ cs_min_date() }} then s.first_used_date else w.first_used_date end
            as first_used_date,
        coalesce(w.last_used_date,
                 case when s.last_used_date < {{ cs_min_date() }} then s.last_used_date else l.last_used_date end)
            as last_used_date
    from window_history as w
    full join stored as s using (supplier_id, feature)
    left join stale_last as l using (supplier_id, feature)
    where (select ok from carried)
    union all
    select supplier_id, feature, min(activity_date), max(activity_date)
    from feature_days
    where not (select ok from carried)
    group by 1, 2
),
{%- else -%}
history as (
    select supplier_id, feature, min(activity_date) as first_used_date, max(activity_date) as last_used_date
    from feature_days
    group by 1, 2
),
{%- endif %}

recent as (
    select
        f.supplier_id,
        f.feature,
        sum(f.uses) filter (where f.activity_date > a.as_of_date - 7) as uses_7d,
        sum(f.uses) filter (where f.activity_date > a.as_of_date - 30) as uses_30d,
        sum(f.uses) as uses_90d,
        count(*) filter (where f.activity_date > a.as_of_date - 7) as active_days_7d,
        count(*) filter (where f.activity_date > a.as_of_date - 30) as active_days_30d,
        count(*) as active_days_90d,
        count(*) filter (where f.activity_date > a.as_of_date - c.adoption_window_days) as active_days_in_rule_window
    from feature_days as f
    cross join as_of as a
    join catalogue as c on c.feature = f.feature
    where f.activity_date > a.as_of_date - 90
    group by 1, 2
)

select
    s.supplier_id,
    c.feature,
    c.is_core,
    a.as_of_date,
    h.first_used_date,
    h.last_used_date,
    coalesce(r.uses_7d, 0)::integer as uses_7d,
    coalesce(r.uses_30d, 0)::integer as uses_30d,
    coalesce(r.uses_90d, 0)::integer as uses_90d,
    coalesce(r.active_days_7d, 0)::integer as active_days_7d,
    coalesce(r.active_days_30d, 0)::integer as active_days_30d,
    coalesce(r.active_days_90d, 0)::integer as active_days_90d,
    coalesce(r.active_days_in_rule_window, 0) >= c.adoption_min_active_days as adopted
from suppliers as s
cross join catalogue as c
cross join as_of as a
left join history as h on h.supplier_id = s.supplier_id and h.feature = c.feature
left join recent as r on r.supplier_id = s.supplier_id and r.feature = c.feature
