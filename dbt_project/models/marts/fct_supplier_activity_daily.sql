-- One row per supplier and UTC day with any activity: product events, tickets opened (on their opened
-- day, also when the ticket first appears in a later day's file), failed or paid invoices.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ cs_delete_window('activity_date') }}",
    tags=['daily'],
    indexes=[{'columns': ['activity_date', 'supplier_id'], 'unique': true},
             {'columns': ['supplier_id', 'activity_date']}],
) }}

with events as (
    select e.*, c.feature, coalesce(c.is_core, false) as is_core
    from {{ ref('stg_wedsync__activity_events') }} as e
    left join {{ ref('feature_catalogue') }} as c on c.event_name = e.event_name
    where {{ cs_in_window('e.loaded_date') }}
),

event_days as (
    select
        supplier_id,
        event_date as activity_date,
        count(*) filter (where event_name = 'login') as logins,
        count(distinct user_id) as active_users,
        count(*) as events_total,
        count(*) filter (where is_core) as core_feature_events,
        count(distinct feature) filter (where feature <> 'session') as distinct_features,
        count(distinct client_id) as clients_touched,
        count(*) filter (where event_name = 'form_sent') as forms_sent,
        count(*) filter (where event_name = 'form_completed') as forms_completed,
        count(*) filter (where event_name = 'journey_started') as journeys_started,
        count(*) filter (where event_name = 'journey_completed') as journeys_completed,
        count(*) filter (where event_name = 'journey_failed') as journeys_failed
    from events
    group by 1, 2
),

feature_uses as (
    select supplier_id, activity_date, jsonb_object_agg(feature, uses order by feature) as events_by_feature
    from {{ ref('int_supplier_feature_days') }}
    where {{ cs_in_window('activity_date') }}
    group by 1, 2
),

tickets as (
    select supplier_id, opened_date as activity_date, count(*) as tickets_opened
    from {{ ref('stg_wedsync__support_tickets') }}
    where {{ cs_in_window('opened_date') }}
    group by 1, 2
),

invoices as (
    select supplier_id, event_date as activity_date,
           count(*) filter (where event_type = 'invoice_failed') as failed_invoices,
           sum(amount) filter (where event_type = 'invoice_paid') as revenue
    from {{ ref('stg_wedsync__billing_events') }}
    where {{ cs_in_window('loaded_date') }} and event_type in ('invoice_failed', 'invoice_paid')
    group by 1, 2
),

supplier_days as (
    select supplier_id, activity_date from event_days
    union
    select supplier_id, activity_date from tickets
    union
    select supplier_id, activity_date from invoices
)

select
    d.supplier_id,
    d.activity_date,
    coalesce(e.logins, 0)::integer as logins,
    coalesce(e.logins, 0)::integer as sessions,
    coalesce(e.active_users, 0)::integer as active_users,
    coalesce(e.events_total, 0)::integer as events_total,
    coalesce(e.core_feature_events, 0)::integer as core_feature_events,
    coalesce(e.distinct_features, 0)::integer as distinct_features,
    coalesce(f.events_by_feature, '{}'::jsonb) as events_by_feature,
    coalesce(e.clients_touched, 0)::integer as clients_touched,
    coalesce(e.forms_sent, 0)::integer as forms_sent,
    coalesce(e.forms_completed, 0)::integer as forms_completed,
    coalesce(e.journeys_started, 0)::integer as journeys_started,
    coalesce(e.journeys_completed, 0)::integer as journeys_completed,
    coalesce(e.journeys_failed, 0)::integer as journeys_failed,
    coalesce(t.tickets_opened, 0)::integer as tickets_opened,
    coalesce(i.failed_invoices, 0)::integer as failed_invoices,
    coalesce(i.revenue, 0)::numeric as revenue
from supplier_days as d
left join event_days as e using (supplier_id, activity_date)
left join feature_uses as f using (supplier_id, activity_date)
left join tickets as t using (supplier_id, activity_date)
left join invoices as i using (supplier_id, activity_date)
