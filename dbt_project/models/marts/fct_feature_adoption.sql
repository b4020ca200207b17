-- One row per supplier (latest snapshot) and catalogue feature, as of the newest processed day:
-- first and last use, uses and active days in the last 7/30/90 days, and the adoption flag per the
-- catalogue rule (used on at least adoption_min_active_days distinct days in adoption_window_days).
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

feature_days as (
    select f.supplier_id, f.feature, f.activity_date, f.uses
    from {{ ref('int_supplier_feature_days') }} as f, as_of
    where f.activity_date <= as_of.as_of_date
),

history as (
    select supplier_id, feature, min(activity_date) as first_used_date, max(activity_date) as last_used_date
    from feature_days
    group by 1, 2
),

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
