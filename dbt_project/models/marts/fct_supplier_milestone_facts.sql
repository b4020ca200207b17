{{ config(materialized='view', tags=['daily']) }}
-- Lifetime running totals per supplier and day, the facts the success_milestones asset evaluates its
-- criteria on (cs_pipeline/config/milestones.yaml). A view: the asset reads only the days it scores.
with days as (
    select supplier_id, as_of_date, (onboarded_date is not null)::int as onboarded, adopted_core_features,
           core_features_total, days_since_signup
    from {{ ref('supplier_engagement_daily') }}
), activity as (
    select supplier_id, activity_date as d, logins, forms_sent, forms_completed, journeys_completed,
           coalesce((events_by_feature ->> 'reviews')::int, 0) as reviews,
           coalesce((events_by_feature ->> 'integrations')::int, 0) as integrations,
           0 as clients, 0 as upgrades
    from {{ ref('fct_supplier_activity_daily') }}
    union all
    select supplier_id, first_seen, 0, 0, 0, 0, 0, 0, count(*), 0
    from (
        select supplier_id, client_id, min(activity_date) as first_seen
        from {{ ref('int_supplier_client_days') }}
        group by 1, 2
    ) first_client_days
    group by 1, 2
    union all
    select supplier_id, event_date, 0, 0, 0, 0, 0, 0, 0, count(*)
    from {{ ref('stg_wedsync__billing_events') }}
    where event_type = 'subscription_upgraded'
    group by 1, 2
    union all
    select supplier_id, as_of_date, 0, 0, 0, 0, 0, 0, 0, 0 from days
), running as (
    select supplier_id, d,
           sum(sum(logins)) over w as logins_total,
           sum(sum(forms_sent)) over w as forms_sent_total,
           sum(sum(forms_completed)) over w as forms_completed_total,
           sum(sum(journeys_completed)) over w as journeys_completed_total,
           sum(sum(reviews)) over w as reviews_total,
           sum(sum(integrations)) over w as integrations_total,
           sum(sum(clients)) over w as clients_total,
           sum(sum(upgrades)) over w as upgrades_total
    from activity
    group by supplier_id, d
    window w as (partition by supplier_id order by d)
)
select days.*, r.logins_total, r.forms_sent_total, r.forms_completed_total, r.journeys_completed_total,
       r.reviews_total, r.integrations_total, r.clients_total, r.upgrades_total
from days
join running r on r.supplier_id = days.supplier_id and r.d = days.as_of_date
