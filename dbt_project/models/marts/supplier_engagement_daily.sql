-- One row per supplier and as-of day for every supplier not cancelled on that day's snapshot, with
-- activity or not: exactly the metrics the health score reads (DOMAIN.md, WS-168 and WS-133).
-- Rolling windows end on the as-of day and include it: "7 days" = [as_of - 6, as_of].
{%- set recency_prior_gaps = 2 -%}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ cs_delete_window('as_of_date') }}",
    post_hook="{{ cs_engagement_category_sums() }}",
    tags=['daily'],
    indexes=[{'columns': ['as_of_date', 'supplier_id'], 'unique': true}],
) }}

with days as (
    select snapshot_date as as_of_date, supplier_id, vendor_category, tier, status, signed_up_at,
           onboarded_at, mrr
    from {{ ref('stg_wedsync__supplier_snapshots') }}
    where {{ cs_in_window('snapshot_date') }} and status <> 'cancelled'
),

activity as (
    select * from {{ ref('fct_supplier_activity_daily') }}
    where {{ cs_in_window('activity_date', 89) }}
),

-- WedSync-specific metrics (clients, forms, journeys) exist only for a product whose catalogue has the
-- events they count: for a team's own product without them they are null (missing, not zero), and the
-- scorecard leaves their components out (missing: exclude).
wedsync_events as (
    select coalesce(bool_or(event_name in ('client_added', 'client_updated')), false) as has_clients,
           coalesce(bool_or(event_name in ('form_sent', 'form_completed')), false) as has_forms,
           coalesce(bool_or(event_name in ('journey_started', 'journey_completed')), false) as has_journeys
    from {{ ref('feature_catalogue') }}
),

{#- A run of a few days (the daily run) carries the stored rolling sums of the day before its window
    forward (issue 30). A longer window (a backfill) uses window frames instead, whose cost does not grow
    with the window's length (issue 18). Both give the same rows (tests/transform). -#}
{%- set window_min = cs_date_var('min_date') -%}
{%- set window_max = cs_date_var('max_date') -%}
{%- set short_window = is_incremental() and window_min is not none and window_max is not none
    and (modules.datetime.date.fromisoformat(window_max) - modules.datetime.date.fromisoformat(window_min)).days < 3 %}
{% if short_window -%}
-- Incremental view maintenance: an N-day sum on as-of day D is the stored sum of min_date - 1, plus the
-- activity rows of [min_date, D] (entering its window), minus those of [min_date - N, D - N] (leaving
-- it), so a run reads 6 short ranges of days instead of 90 days per supplier. The stored row is used
-- only where it holds every carried column (the forms and journeys columns are null while the catalogue
-- lacks their events); a supplier without one (new, back from a cancellation) reads its own 90 days.
previous_day as (
    select p.supplier_id, p.events_7d, p.events_7d + p.events_prev_7d as events_14d, p.events_30d,
           p.events_30d + p.events_prev_30d as events_60d, p.active_days_7d, p.active_days_30d, p.logins_30d,
           p.forms_sent_30d, p.forms_completed_30d, p.journeys_started_30d, p.journeys_completed_30d,
           p.tickets_opened_30d, p.failed_invoices_30d, p.active_days_90d, p.revenue_90d
    from {{ this }} as p
    cross join wedsync_events as w
    where p.as_of_date = {{ cs_min_date() }} - 1
      and num_nulls(p.events_7d, p.events_prev_7d, p.events_30d, p.events_prev_30d, p.active_days_7d,
                    p.active_days_30d, p.logins_30d, p.tickets_opened_30d, p.failed_invoices_30d,
                    p.active_days_90d, p.revenue_90d) = 0
      and (not w.has_forms or (p.forms_sent_30d is not null and p.forms_completed_30d is not null))
      and (not w.has_journeys or (p.journeys_started_30d is not null and p.journeys_completed_30d is not null))
),

-- Materialized: read by the day ranges (index on activity_date), never per supplier through the
-- (supplier_id, activity_date) index, which would read each supplier's whole history up to the day.
moved_rows as materialized (
    select * from {{ ref('fct_supplier_activity_daily') }}
    where activity_date between {{ cs_min_date() }} and {{ cs_max_date() }}
    {%- for n in [7, 14, 30, 60, 90] %}
       or activity_date between {{ cs_min_date() }} - {{ n }} and {{ cs_max_date() }} - {{ n }}
    {%- endfor %}
),

carried_activity as (
    select
        d.supplier_id,
        d.as_of_date,
        {{ cs_moved_sum('events_total', 7, 'p.events_7d') }} as events_7d,
        {{ cs_moved_sum('events_total', 14, 'p.events_14d') }} as events_14d,
        {{ cs_moved_sum('events_total', 30, 'p.events_30d') }} as events_30d,
        {{ cs_moved_sum('events_total', 60, 'p.events_60d') }} as events_60d,
        {{ cs_moved_count(7, 'p.active_days_7d') }} as active_days_7d,
        {{ cs_moved_count(30, 'p.active_days_30d') }} as active_days_30d,
        {%- for column in ['logins', 'forms_sent', 'forms_completed', 'journeys_started', 'journeys_completed',
                           'tickets_opened', 'failed_invoices'] %}
        {{ cs_moved_sum(column, 30, 'p.' ~ column ~ '_30d') }} as {{ column }}_30d,
        {%- endfor %}
        {{ cs_moved_count(90, 'p.active_days_90d') }} as active_days_90d,
        {{ cs_moved_sum('revenue', 90, 'p.revenue_90d') }} as revenue_90d,
        {#- The digits after the point of a numeric sum are the most of its terms': the full sum's are
            those of the rows in the window, which the stored sum's keep unless its rows with the most
            all left (then read the supplier's window again). -#}
        case when coalesce(max(scale(a.revenue)) filter (where {{ cs_leaving('a', 'd.as_of_date', 90) }}), 0) < scale(p.revenue_90d)
                  or scale(p.revenue_90d) = 0
             then greatest(scale(p.revenue_90d), coalesce(max(scale(a.revenue)) filter (where {{ cs_entering('a', 'd.as_of_date') }}), 0))
             else (select coalesce(max(scale(f.revenue)), 0) from {{ ref('fct_supplier_activity_daily') }} as f
                   where f.supplier_id = d.supplier_id
                     and f.activity_date between d.as_of_date - 89 and d.as_of_date)
        end as revenue_90d_scale
    from days as d
    join previous_day as p using (supplier_id)
    left join moved_rows as a
        on a.supplier_id = d.supplier_id and a.activity_date <= d.as_of_date
    group by d.supplier_id, d.as_of_date, p.supplier_id, p.events_7d, p.events_14d, p.events_30d, p.events_60d,
             p.active_days_7d, p.active_days_30d, p.logins_30d, p.forms_sent_30d, p.forms_completed_30d,
             p.journeys_started_30d, p.journeys_completed_30d, p.tickets_opened_30d, p.failed_invoices_30d,
             p.active_days_90d, p.revenue_90d
),

-- Suppliers without a usable stored row: each as-of day joined to its own 90 days of activity rows.
joined_activity as (
    select
        d.supplier_id,
        d.as_of_date,
        coalesce(sum(a.events_total) filter (where a.activity_date > d.as_of_date - 7), 0) as events_7d,
        coalesce(sum(a.events_total) filter (where a.activity_date > d.as_of_date - 14), 0) as events_14d,
        coalesce(sum(a.events_total) filter (where a.activity_date > d.as_of_date - 30), 0) as events_30d,
        coalesce(sum(a.events_total) filter (where a.activity_date > d.as_of_date - 60), 0) as events_60d,
        count(*) filter (where a.activity_date > d.as_of_date - 7 and a.events_total > 0) as active_days_7d,
        count(*) filter (where a.activity_date > d.as_of_date - 30 and a.events_total > 0) as active_days_30d,
        coalesce(sum(a.logins) filter (where a.activity_date > d.as_of_date - 30), 0) as logins_30d,
        coalesce(sum(a.forms_sent) filter (where a.activity_date > d.as_of_date - 30), 0) as forms_sent_30d,
        coalesce(sum(a.forms_completed) filter (where a.activity_date > d.as_of_date - 30), 0) as forms_completed_30d,
        coalesce(sum(a.journeys_started) filter (where a.activity_date > d.as_of_date - 30), 0) as journeys_started_30d,
        coalesce(sum(a.journeys_completed) filter (where a.activity_date > d.as_of_date - 30), 0) as journeys_completed_30d,
        coalesce(sum(a.tickets_opened) filter (where a.activity_date > d.as_of_date - 30), 0) as tickets_opened_30d,
        coalesce(sum(a.failed_invoices) filter (where a.activity_date > d.as_of_date - 30), 0) as failed_invoices_30d,
        count(*) filter (where a.events_total > 0) as active_days_90d,
        coalesce(sum(a.revenue), 0) as revenue_90d
    from days as d
    left join {{ ref('fct_supplier_activity_daily') }} as a
        on a.supplier_id = d.supplier_id
        and a.activity_date between d.as_of_date - 89 and d.as_of_date
    where not exists (select 1 from previous_day as p where p.supplier_id = d.supplier_id)
    group by 1, 2
),

rolling_activity as (
    select supplier_id, as_of_date, events_7d, events_14d - events_7d as events_prev_7d, events_30d,
           events_60d - events_30d as events_prev_30d, active_days_7d, active_days_30d, logins_30d,
           forms_sent_30d, forms_completed_30d, journeys_started_30d, journeys_completed_30d,
           tickets_opened_30d, failed_invoices_30d, active_days_90d, round(revenue_90d, revenue_90d_scale) as revenue_90d
    from carried_activity
    union all
    select supplier_id, as_of_date, events_7d, events_14d - events_7d, events_30d, events_60d - events_30d,
           active_days_7d, active_days_30d, logins_30d, forms_sent_30d, forms_completed_30d, journeys_started_30d,
           journeys_completed_30d, tickets_opened_30d, failed_invoices_30d, active_days_90d, revenue_90d
    from joined_activity
),

{% else -%}
-- Rolling sums over the activity rows themselves (window frames of 7/14/30/60/90 days ending on each
-- as-of day), not a join of every as-of day to its 90 days: the cost grows with the rows read, not with
-- rows x window length (issue 18). Each as-of day is a row of its own (is_day) in the same frames.
activity_and_days as (
    select supplier_id, activity_date as d, false as is_day, events_total, logins, forms_sent, forms_completed,
           journeys_started, journeys_completed, tickets_opened, failed_invoices, revenue
    from activity
    union all
    select supplier_id, as_of_date, true, null, null, null, null, null, null, null, null, null
    from days
),

rolling_sums as (
    select
        supplier_id,
        d as as_of_date,
        is_day,
        sum(events_total) over w7 as events_7d,
        sum(events_total) over w14 as events_14d,
        sum(events_total) over w30 as events_30d,
        sum(events_total) over w60 as events_60d,
        count(*) filter (where events_total > 0) over w7 as active_days_7d,
        count(*) filter (where events_total > 0) over w30 as active_days_30d,
        sum(logins) over w30 as logins_30d,
        sum(forms_sent) over w30 as forms_sent_30d,
        sum(forms_completed) over w30 as forms_completed_30d,
        sum(journeys_started) over w30 as journeys_started_30d,
        sum(journeys_completed) over w30 as journeys_completed_30d,
        sum(tickets_opened) over w30 as tickets_opened_30d,
        sum(failed_invoices) over w30 as failed_invoices_30d,
        count(*) filter (where events_total > 0) over w90 as active_days_90d,
        sum(revenue) over w90 as revenue_90d
    from activity_and_days
    window
        w7 as (partition by supplier_id order by d range between interval '6 days' preceding and current row),
        w14 as (partition by supplier_id order by d range between interval '13 days' preceding and current row),
        w30 as (partition by supplier_id order by d range between interval '29 days' preceding and current row),
        w60 as (partition by supplier_id order by d range between interval '59 days' preceding and current row),
        w90 as (partition by supplier_id order by d range between interval '89 days' preceding and current row)
),

rolling_activity as (
    select
        supplier_id,
        as_of_date,
        coalesce(events_7d, 0) as events_7d,
        coalesce(events_14d, 0) - coalesce(events_7d, 0) as events_prev_7d,
        coalesce(events_30d, 0) as events_30d,
        coalesce(events_60d, 0) - coalesce(events_30d, 0) as events_prev_30d,
        active_days_7d,
        active_days_30d,
        coalesce(logins_30d, 0) as logins_30d,
        coalesce(forms_sent_30d, 0) as forms_sent_30d,
        coalesce(forms_completed_30d, 0) as forms_completed_30d,
        coalesce(journeys_started_30d, 0) as journeys_started_30d,
        coalesce(journeys_completed_30d, 0) as journeys_completed_30d,
        coalesce(tickets_opened_30d, 0) as tickets_opened_30d,
        coalesce(failed_invoices_30d, 0) as failed_invoices_30d,
        active_days_90d,
        coalesce(revenue_90d, 0) as revenue_90d
    from rolling_sums
    where is_day
),
{%- endif %}

-- Lifetime running totals (first and last active day, active days, paid revenue). A full refresh
-- sums every day up to each as-of day; an incremental run carries the totals forward from the stored
-- row of the day before its window (min_date - 1) and adds only the window's days, so its cost does
-- not grow with history. A supplier with no stored row that day (new, or back from a cancellation)
-- is seeded from its own fct_supplier_activity_daily rows before the window (index on supplier_id).
lifetime_calendar as (
    select supplier_id, activity_date as d,
           case when events_total > 0 then activity_date end as first_active_date,
           case when events_total > 0 then activity_date end as last_active_date,
           (events_total > 0)::integer as active_days,
           revenue
    from activity
    {% if is_incremental() -%} where activity_date >= {{ cs_min_date() }} {%- endif %}
    union all
    select supplier_id, as_of_date, null::date, null::date, 0, 0 from days
    {% if is_incremental() %}
    union all
    select supplier_id, as_of_date, first_active_date, last_active_date, active_days_lifetime, revenue_lifetime
    from {{ this }}
    where as_of_date = {{ cs_min_date() }} - 1
    union all
    select s.supplier_id, {{ cs_min_date() }} - 1, h.first_active_date, h.last_active_date, h.active_days, h.revenue
    from (select distinct supplier_id from days) as s
    cross join lateral (
        select min(f.activity_date) filter (where f.events_total > 0) as first_active_date,
               max(f.activity_date) filter (where f.events_total > 0) as last_active_date,
               count(*) filter (where f.events_total > 0) as active_days,
               coalesce(sum(f.revenue), 0) as revenue
        from {{ ref('fct_supplier_activity_daily') }} as f
        where f.supplier_id = s.supplier_id and f.activity_date < {{ cs_min_date() }}
    ) as h
    where not exists (select 1 from {{ this }} as t
                      where t.supplier_id = s.supplier_id and t.as_of_date = {{ cs_min_date() }} - 1)
    {% endif %}
),

lifetime_running as (
    select supplier_id, d as as_of_date,
           min(min(first_active_date)) over w as first_active_date,
           max(max(last_active_date)) over w as last_active_date,
           sum(sum(active_days)) over w as active_days_lifetime,
           sum(sum(revenue)) over w as revenue_lifetime
    from lifetime_calendar
    group by supplier_id, d
    window w as (partition by supplier_id order by d)
),

lifetime as (
    select
        d.supplier_id,
        d.as_of_date,
        l.first_active_date,
        l.last_active_date,
        l.active_days_lifetime,
        l.revenue_lifetime,
        greatest(d.as_of_date - least((d.signed_up_at at time zone 'UTC')::date, l.first_active_date), 0) as tenure_days,
        d.as_of_date - l.last_active_date as days_since_last_activity,
        greatest(l.active_days_lifetime - 1, 0) as gaps,
        l.last_active_date - l.first_active_date as gap_days
    from days as d
    join lifetime_running as l using (supplier_id, as_of_date)
),

-- The population's pooled gap between active days on each as-of day (all gaps of all suppliers with
-- at least 2 active days): the prior that recency_to_cadence shrinks each supplier's own gap toward.
population_gap as (
    select as_of_date, sum(gap_days)::numeric / nullif(sum(gaps), 0) as gap
    from lifetime
    group by 1
),

-- Last login on or before each as-of day: a running max over login days, seeded (in incremental runs)
-- with the previous day's stored value, so that the answer does not depend on how far back the
-- window reads.
{%- if is_incremental() %}
-- A supplier without a stored row of min_date - 1 (new; back from a cancellation; a day that was never
-- run): its last login before the window from all its history, as the lifetime totals above, not only
-- from the window's 90-day look-back (a supplier dormant for longer would lose its last login, and the
-- days after would carry the loss on). One backward probe of the (supplier_id, activity_date) index each.
login_seed as (
    select s.supplier_id, h.last_login_date
    from (select distinct d.supplier_id from days as d
          where not exists (select 1 from {{ this }} as p
                            where p.supplier_id = d.supplier_id and p.as_of_date = {{ cs_min_date() }} - 1)) as s
    cross join lateral (
        select max(f.activity_date) as last_login_date
        from {{ ref('fct_supplier_activity_daily') }} as f
        where f.supplier_id = s.supplier_id and f.activity_date < {{ cs_min_date() }} and f.logins > 0
    ) as h
    where h.last_login_date is not null
),
{%- endif %}
{% if short_window -%}
-- The stored last login of min_date - 1 covers every login before the window, so only the window's login
-- rows are read; a supplier without a stored row takes its seed (login_seed).
login_rows as (
    select supplier_id, activity_date from {{ ref('fct_supplier_activity_daily') }}
    where activity_date between {{ cs_min_date() }} and {{ cs_max_date() }} and logins > 0
    union all
    select supplier_id, last_login_date from login_seed
),

last_logins as (
    select d.supplier_id, d.as_of_date, greatest(max(a.activity_date), max(p.last_login_date)) as last_login_date
    from days as d
    left join login_rows as a
        on a.supplier_id = d.supplier_id and a.activity_date <= d.as_of_date
    left join {{ this }} as p
        on p.supplier_id = d.supplier_id and p.as_of_date = {{ cs_min_date() }} - 1
    group by 1, 2
),

{% else -%}
login_calendar as (
    select supplier_id, activity_date as d, activity_date as login_date
    from activity where logins > 0
    union all
    select supplier_id, as_of_date, null::date from days
    {% if is_incremental() %}
    union all
    select supplier_id, as_of_date, last_login_date from {{ this }}
    where as_of_date = {{ cs_min_date() }} - 1 and last_login_date is not null
    union all
    select supplier_id, {{ cs_min_date() }} - 1, last_login_date from login_seed
    {% endif %}
),

last_logins as (
    select supplier_id, d as as_of_date,
           max(max(login_date)) over (partition by supplier_id order by d) as last_login_date
    from login_calendar
    group by supplier_id, d
),
{%- endif %}

{% if short_window -%}
-- Distinct active users on the day (dau) and in the last 7 (wau) and 30 days (mau) of a short window
-- (the daily run, issue 30): a user counts in an as-of day's mau when active in its 30 days, in its wau
-- when its last active day among them is within 7 days, in its dau when that is the day itself. One hash
-- aggregate of each as-of day's 30 days of user days, instead of sorting them for the segments below.
-- Equal to the segment counting (tests/transform).
user_last_days as (
    select u.supplier_id, a.as_of_date, u.user_id, u.last_date
    from (select distinct as_of_date from days) as a
    cross join lateral (
        select supplier_id, user_id, max(activity_date) as last_date
        from {{ ref('int_supplier_user_days') }}
        where activity_date between a.as_of_date - 29 and a.as_of_date
        group by supplier_id, user_id
    ) as u
),

rolling_users as (
    select d.supplier_id, d.as_of_date,
           count(u.user_id) filter (where u.last_date = d.as_of_date) as dau,
           count(u.user_id) filter (where u.last_date > d.as_of_date - 7) as wau,
           count(u.user_id) as mau
    from days as d
    left join user_last_days as u on u.supplier_id = d.supplier_id and u.as_of_date = d.as_of_date
    group by d.supplier_id, d.as_of_date
),

{% else -%}
-- Distinct active users on the day (dau) and in the last 7 (wau) and 30 days (mau), and distinct clients
-- in the last 30 and 90 days, without joining every as-of day to its window (issue 18). An active day
-- a of a user covers the as-of days [a, a + N - 1]; cut at the user's next active day the segments of
-- one user do not overlap, so the number of segments covering a day is the number of distinct users.
-- Each segment adds +1 where it starts (or on the window's first day, if it started before and still
-- runs) and -1 where it ends; the running sum on an as-of day counts the segments covering it. Only
-- segments that reach into the window are read.
users as (
    select supplier_id, activity_date,
           lead(activity_date) over (partition by supplier_id, user_id order by activity_date) as next_date
    from {{ ref('int_supplier_user_days') }}
    where {{ cs_in_window('activity_date', 29) }}
),

user_deltas as (
    select supplier_id, greatest(activity_date, {{ cs_min_date() }}) as d,
           (activity_date >= {{ cs_min_date() }})::integer as delta_1,
           (least(activity_date + 7, next_date) > {{ cs_min_date() }})::integer as delta_7,
           (least(activity_date + 30, next_date) > {{ cs_min_date() }})::integer as delta_30
    from users
    where activity_date + 30 > {{ cs_min_date() }}
    union all
    select supplier_id, activity_date + 1, -1, 0, 0 from users
    where activity_date >= {{ cs_min_date() }} and activity_date + 1 <= {{ cs_max_date() }}
    union all
    select supplier_id, least(activity_date + 7, next_date), 0, -1, 0 from users
    where least(activity_date + 7, next_date) > {{ cs_min_date() }}
      and least(activity_date + 7, next_date) <= {{ cs_max_date() }}
    union all
    select supplier_id, least(activity_date + 30, next_date), 0, 0, -1 from users
    where least(activity_date + 30, next_date) > {{ cs_min_date() }}
      and least(activity_date + 30, next_date) <= {{ cs_max_date() }}
    union all
    select supplier_id, as_of_date, 0, 0, 0 from days
),

rolling_users as (
    select supplier_id, d as as_of_date,
           sum(sum(delta_1)) over w as dau,
           sum(sum(delta_7)) over w as wau,
           sum(sum(delta_30)) over w as mau
    from user_deltas
    group by supplier_id, d
    window w as (partition by supplier_id order by d)
),
{%- endif %}

{% if short_window -%}
-- Distinct clients carried forward (issue 30): a client counts in the N-day window of as-of day E when
-- it visited in [E - N + 1, E]. From E - 1 to E it enters when it visits on E and its previous active day
-- is before E - N (or it has none), and it leaves when its visit of E - N is its last up to E (no visit
-- in (E - N, E]: one probe of the (supplier, client, day) index each). So a run reads its own days and
-- the two days leaving the windows (30 and 90 days back), not 90 days of client days. Each supplier
-- starts from its stored counts of min_date - 1; a supplier without them (new, back from a
-- cancellation, or the catalogue just gained client events) counts its clients of the N days before
-- the window through the same index. Equal to the segment counting below (tests/transform).
{%- set visits = ref('int_supplier_client_visits') %}
client_deltas as (
    select supplier_id, activity_date as d,
           (previous_activity_date is null or previous_activity_date < activity_date - 30)::integer as delta_30,
           (previous_activity_date is null or previous_activity_date < activity_date - 90)::integer as delta_90
    from {{ visits }}
    where activity_date between {{ cs_min_date() }} and {{ cs_max_date() }}
    {%- for n in [30, 90] %}
    union all
    select v.supplier_id, v.activity_date + {{ n }}, {{ '-1, 0' if n == 30 else '0, -1' }}
    from {{ visits }} as v
    where v.activity_date between {{ cs_min_date() }} - {{ n }} and {{ cs_max_date() }} - {{ n }}
      and not exists (select 1 from {{ visits }} as l
                      where l.supplier_id = v.supplier_id and l.client_id = v.client_id
                        and l.activity_date > v.activity_date and l.activity_date <= v.activity_date + {{ n }})
    {%- endfor %}
    union all
    select supplier_id, {{ cs_min_date() }}, clients_active_30d, clients_active_90d
    from {{ this }}
    where as_of_date = {{ cs_min_date() }} - 1
      and clients_active_30d is not null and clients_active_90d is not null
    union all
    select s.supplier_id, {{ cs_min_date() }}, r.clients_30d, r.clients_90d
    from (select distinct supplier_id from days) as s
    cross join wedsync_events as w
    cross join lateral (
        select count(distinct v.client_id) filter (where v.activity_date >= {{ cs_min_date() }} - 30) as clients_30d,
               count(distinct v.client_id) as clients_90d
        from {{ visits }} as v
        where v.supplier_id = s.supplier_id
          and v.activity_date between {{ cs_min_date() }} - 90 and {{ cs_min_date() }} - 1
    ) as r
    where w.has_clients
      and not exists (select 1 from {{ this }} as p
                      where p.supplier_id = s.supplier_id and p.as_of_date = {{ cs_min_date() }} - 1
                        and p.clients_active_30d is not null and p.clients_active_90d is not null)
    union all
    select supplier_id, as_of_date, 0, 0 from days
),

{% else -%}
-- Clients by the same counting, from each client day's previous active day p instead of the next: the
-- client day a counts on the as-of days [max(a, p + N), a + N - 1] (the first of its days in any N-day
-- window), so the segments of one client do not overlap. Each branch reads only the client days whose
-- segment starts or ends in the window (index on activity_date), and nothing needs sorting.
client_deltas as (
    select supplier_id, greatest(activity_date, previous_activity_date + 30, {{ cs_min_date() }}) as d,
           1 as delta_30, 0 as delta_90
    from {{ ref('int_supplier_client_visits') }}
    where activity_date > {{ cs_min_date() }} - 30 and activity_date <= {{ cs_max_date() }}
      and greatest(activity_date, previous_activity_date + 30) <= {{ cs_max_date() }}
    union all
    select supplier_id, activity_date + 30, -1, 0
    from {{ ref('int_supplier_client_visits') }}
    where activity_date > {{ cs_min_date() }} - 30 and activity_date <= {{ cs_max_date() }} - 30
    union all
    select supplier_id, greatest(activity_date, previous_activity_date + 90, {{ cs_min_date() }}), 0, 1
    from {{ ref('int_supplier_client_visits') }}
    where activity_date > {{ cs_min_date() }} - 90 and activity_date <= {{ cs_max_date() }}
      and greatest(activity_date, previous_activity_date + 90) <= {{ cs_max_date() }}
    union all
    select supplier_id, activity_date + 90, 0, -1
    from {{ ref('int_supplier_client_visits') }}
    where activity_date > {{ cs_min_date() }} - 90 and activity_date <= {{ cs_max_date() }} - 90
    union all
    select supplier_id, as_of_date, 0, 0 from days
),
{%- endif %}

client_counts as (
    select supplier_id, d as as_of_date,
           sum(sum(delta_30)) over w as clients_30d,
           sum(sum(delta_90)) over w as clients_90d
    from client_deltas
    group by supplier_id, d
    window w as (partition by supplier_id order by d)
),

catalogue as (
    select * from {{ ref('int_feature_catalogue_features') }}
),

{% if short_window -%}
-- Adoption of a short window (the daily run, issue 30; the catalogue rule: used on at least
-- adoption_min_active_days distinct days within the last adoption_window_days): for each as-of day, the
-- core features with that many feature days in the window ending on it, counted in one hash aggregate
-- of the window's feature days instead of the segment counting below. Equal to it (tests/transform).
adopted_features as (
    select a.as_of_date, r.supplier_id, r.feature
    from (select distinct as_of_date from days) as a
    cross join lateral (
        select f.supplier_id, f.feature
        from {{ ref('int_supplier_feature_days') }} as f
        join catalogue as c on c.feature = f.feature
        where f.is_core
          and f.activity_date between a.as_of_date - c.adoption_window_days + 1 and a.as_of_date
          -- the same bound for the index: the catalogue's longest window
          and f.activity_date > a.as_of_date - (select max(adoption_window_days) from catalogue)
        group by f.supplier_id, f.feature, c.adoption_min_active_days
        having count(*) >= c.adoption_min_active_days
    ) as r
),

adoption_counts as (
    select d.supplier_id, d.as_of_date, count(f.feature) as adopted_core_features
    from days as d
    left join adopted_features as f on f.supplier_id = d.supplier_id and f.as_of_date = d.as_of_date
    group by d.supplier_id, d.as_of_date
),

{% else -%}
-- Adoption (the catalogue rule: used on at least adoption_min_active_days distinct days within the last
-- adoption_window_days) by the same segment counting: a core feature's active day a counts on the as-of
-- days [a, a + window - 1]; the running sum per supplier and feature is its active days in the window,
-- and the number of adopted core features changes only where a feature's flag does (issue 18).
core_feature_days as (
    select f.supplier_id, f.feature, f.activity_date, c.adoption_window_days as window_days
    from {{ ref('int_supplier_feature_days') }} as f
    join catalogue as c on c.feature = f.feature
    where {{ cs_in_window('f.activity_date', 89) }} and f.is_core
      and f.activity_date + c.adoption_window_days > {{ cs_min_date() }}
      -- The same bound for the index (the catalogue's longest window, not the 90-day look-back): a
      -- daily run reads 30 days of feature days with WedSync's catalogue, not 90.
      and f.activity_date > {{ cs_min_date() }} - (select max(adoption_window_days) from catalogue)
),

feature_deltas as (
    select supplier_id, feature, greatest(activity_date, {{ cs_min_date() }}) as d, 1 as delta
    from core_feature_days
    union all
    select supplier_id, feature, activity_date + window_days, -1 from core_feature_days
    where activity_date + window_days <= {{ cs_max_date() }}
),

feature_flags as (
    select r.supplier_id, r.feature, r.d,
           (r.active_days >= c.adoption_min_active_days)::integer as adopted
    from (
        select supplier_id, feature, d,
               sum(sum(delta)) over (partition by supplier_id, feature order by d) as active_days
        from feature_deltas
        group by supplier_id, feature, d
    ) as r
    join catalogue as c using (feature)
),

adoption_deltas as (
    select supplier_id, d,
           adopted - lag(adopted, 1, 0) over (partition by supplier_id, feature order by d) as delta
    from feature_flags
    union all
    select supplier_id, as_of_date, 0 from days
),

adoption_counts as (
    select supplier_id, d as as_of_date,
           sum(sum(delta)) over (partition by supplier_id order by d) as adopted_core_features
    from adoption_deltas
    group by supplier_id, d
),
{%- endif %}

core_total as (
    select count(*) as core_features_total from catalogue where is_core
),

tickets as (
    select supplier_id, opened_date, resolved_date, priority, csat
    from {{ ref('stg_wedsync__support_tickets') }}
    where opened_date <= {{ cs_max_date() }}
),

ticket_stats as (
    select
        d.supplier_id,
        d.as_of_date,
        count(*) filter (where t.resolved_date is null or t.resolved_date > d.as_of_date) as open_tickets,
        count(*) filter (where (t.resolved_date is null or t.resolved_date > d.as_of_date)
                           and t.priority = 'urgent') as urgent_open_tickets,
        avg(t.csat) filter (where t.resolved_date between d.as_of_date - 29 and d.as_of_date) as csat_30d
    from days as d
    join tickets as t
        on t.supplier_id = d.supplier_id
        and t.opened_date <= d.as_of_date
        and (t.resolved_date is null or t.resolved_date >= d.as_of_date - 29)
    group by 1, 2
)

select
    d.supplier_id,
    d.as_of_date,
    d.vendor_category,
    d.tier,
    d.status,
    {{ lifecycle_stage('d.status', 'd.signed_up_at', 'd.as_of_date') }} as lifecycle_stage,
    (d.signed_up_at at time zone 'UTC')::date as signup_date,
    (d.onboarded_at at time zone 'UTC')::date as onboarded_date,
    d.as_of_date - (d.signed_up_at at time zone 'UTC')::date as days_since_signup,
    d.as_of_date - (d.onboarded_at at time zone 'UTC')::date as days_since_onboarded,
    l.last_login_date,
    d.as_of_date - l.last_login_date as days_since_last_login,
    u.dau::integer as dau,
    u.wau::integer as wau,
    u.mau::integer as mau,
    round(u.dau::numeric / nullif(u.mau, 0), 4) as stickiness,
    ra.events_7d::integer as events_7d,
    ra.events_prev_7d::integer as events_prev_7d,
    round((ra.events_7d - ra.events_prev_7d)::numeric / nullif(ra.events_prev_7d, 0), 4) as events_change_7d,
    ra.events_30d::integer as events_30d,
    ra.events_prev_30d::integer as events_prev_30d,
    round((ra.events_30d - ra.events_prev_30d)::numeric / nullif(ra.events_prev_30d, 0), 4) as events_change_30d,
    ra.active_days_7d::integer as active_days_7d,
    ra.active_days_30d::integer as active_days_30d,
    ra.logins_30d::integer as logins_30d,
    case when w.has_clients then coalesce(c.clients_30d, 0)::integer end as clients_active_30d,
    case when w.has_clients then coalesce(c.clients_90d, 0)::integer end as clients_active_90d,
    case when w.has_clients then round(c.clients_30d::numeric / nullif(c.clients_90d, 0), 4) end as client_activity_rate,
    case when w.has_forms then ra.forms_sent_30d::integer end as forms_sent_30d,
    case when w.has_forms then ra.forms_completed_30d::integer end as forms_completed_30d,
    case when w.has_forms then round(ra.forms_completed_30d::numeric / nullif(ra.forms_sent_30d, 0), 4) end
        as form_completion_rate,
    case when w.has_journeys then ra.journeys_started_30d::integer end as journeys_started_30d,
    case when w.has_journeys then ra.journeys_completed_30d::integer end as journeys_completed_30d,
    case when w.has_journeys then round(ra.journeys_completed_30d::numeric / nullif(ra.journeys_started_30d, 0), 4) end
        as journey_completion_rate,
    coalesce(ac.adopted_core_features, 0)::integer as adopted_core_features,
    ct.core_features_total::integer as core_features_total,
    round(coalesce(ac.adopted_core_features, 0)::numeric / nullif(ct.core_features_total, 0), 4) as adoption_breadth,
    coalesce(ts.open_tickets, 0)::integer as open_tickets,
    coalesce(ts.urgent_open_tickets, 0)::integer as urgent_open_tickets,
    ra.tickets_opened_30d::integer as tickets_opened_30d,
    round(ts.csat_30d, 2) as csat_30d,
    ra.failed_invoices_30d::integer as failed_invoices_30d,
    d.mrr,
    lt.first_active_date,
    lt.last_active_date,
    lt.tenure_days::integer as tenure_days,
    lt.active_days_lifetime::integer as active_days_lifetime,
    round(30.0 * lt.active_days_lifetime / (lt.tenure_days + 1), 4) as active_days_per_30d_lifetime,
    lt.days_since_last_activity::integer as days_since_last_activity,
    round(lt.gap_days::numeric / nullif(lt.gaps, 0), 4) as mean_days_between_active_days,
    round(lt.days_since_last_activity
          / nullif((lt.gap_days + {{ recency_prior_gaps }} * coalesce(pg.gap, 0))
                   / nullif(lt.gaps + case when pg.gap is null then 0 else {{ recency_prior_gaps }} end, 0), 0), 4)
        as recency_to_cadence,
    ra.active_days_90d::integer as active_days_90d,
    ra.revenue_90d::numeric as revenue_90d,
    lt.revenue_lifetime::numeric as revenue_lifetime
from days as d
cross join core_total as ct
cross join wedsync_events as w
left join rolling_activity as ra using (supplier_id, as_of_date)
left join last_logins as l using (supplier_id, as_of_date)
left join rolling_users as u using (supplier_id, as_of_date)
left join client_counts as c using (supplier_id, as_of_date)
left join adoption_counts as ac using (supplier_id, as_of_date)
left join ticket_stats as ts using (supplier_id, as_of_date)
left join lifetime as lt using (supplier_id, as_of_date)
left join population_gap as pg using (as_of_date)
