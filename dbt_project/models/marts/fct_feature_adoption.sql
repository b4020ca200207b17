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
{#- (In a dbt unit test with a `this` fixture, `this` is the fixture's name.) -#}
{%- set stored = this if this is string else (adapter.get_relation(this.database, this.schema, this.identifier) if (execute and this is not none) else none) -%}
{#- (A unit test's `this` fixture is the stored table also when dbt builds with --full-refresh.) -#}
{%- set carry = stored is not none and (this is string or not flags.FULL_REFRESH) and cs_date_var('min_date') is not none %}
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

-- A pair the stored table lacks (a new supplier; a supplier missing from the stored day's snapshot; a
-- feature back in the catalogue) takes its first and last use before the window from its feature days:
-- one probe of the (supplier_id, feature, activity_date) index per pair (usually none), never only the window.
-- (Materialized: the anti-join first, then the probes, never a probe per pair.)
unstored_pairs as materialized (
    select s.supplier_id, c.feature
    from suppliers as s
    cross join catalogue as c
    where (select ok from carried)
      and not exists (select 1 from {{ this }} as t where t.supplier_id = s.supplier_id and t.feature = c.feature)
),

unstored as (
    select p.supplier_id, p.feature, b.first_used_date, b.last_used_date
    from unstored_pairs as p
    cross join lateral (
        select min(f.activity_date) as first_used_date, max(f.activity_date) as last_used_date
        from {{ ref('int_supplier_feature_days') }} as f
        where f.supplier_id = p.supplier_id and f.feature = p.feature and f.activity_date < {{ cs_min_date() }}
    ) as b
    where b.first_used_date is not null
),

history as (
    select
        supplier_id,
        feature,
        case when s.first_used_date < {{ cs_min_date() }} then s.first_used_date
             else coalesce(u.first_used_date, w.first_used_date) end as first_used_date,
        coalesce(w.last_used_date,
                 case when s.last_used_date < {{ cs_min_date() }} then s.last_used_date else l.last_used_date end,
                 u.last_used_date) as last_used_date
    from window_history as w
    full join stored as s using (supplier_id, feature)
    full join unstored as u using (supplier_id, feature)
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

{#- A run of a few days (the daily run) carries the stored 7/30/90-day uses and active days forward
    (issue 30) instead of re-reading 90 days of feature days; a longer window (a backfill) recounts them.
    Both give the same rows (tests/transform). -#}
{%- set window_min = cs_date_var('min_date') -%}
{%- set window_max = cs_date_var('max_date') -%}
{%- set short_window = carry and window_max is not none
    and (modules.datetime.date.fromisoformat(window_max) - modules.datetime.date.fromisoformat(window_min)).days < 3 %}
{% if short_window -%}
-- Incremental view maintenance: an N-day sum as of max_date is the stored sum as of min_date - 1, plus the
-- feature days of [min_date, max_date] (entering the window), minus those of [min_date - N, max_date - N]
-- (leaving it); int_supplier_feature_days has one row per supplier, feature and day, so active days are
-- counted the same way. The stored table is used only when it is as of min_date - 1; a supplier and
-- feature without a stored row (a new supplier or feature, or no table of that day) is recounted from
-- its 90 days. The catalogue's adoption window is one of the carried 7/30/90 days, or its active days
-- are counted in the feature days of that window.
stored_recent as (
    select supplier_id, feature, uses_7d, uses_30d, uses_90d, active_days_7d, active_days_30d, active_days_90d
    from {{ this }}
    where as_of_date = {{ cs_min_date() }} - 1
),

-- Materialized: read by the day ranges (index on activity_date).
moved_days as materialized (
    select supplier_id, feature, activity_date, uses
    from {{ ref('int_supplier_feature_days') }}
    where activity_date between {{ cs_min_date() }} and {{ cs_max_date() }}
    {%- for n in [7, 30, 90] %}
       or activity_date between {{ cs_min_date() }} - {{ n }} and {{ cs_max_date() }} - {{ n }}
    {%- endfor %}
),

moved as (
    select
        supplier_id,
        feature,
        coalesce(sum(uses) filter (where activity_date >= {{ cs_min_date() }}), 0) as uses_in,
        count(*) filter (where activity_date >= {{ cs_min_date() }}) as days_in,
        {%- for n in [7, 30, 90] %}
        coalesce(sum(uses) filter (where activity_date between {{ cs_min_date() }} - {{ n }} and {{ cs_max_date() }} - {{ n }}), 0)
            as uses_out_{{ n }},
        count(*) filter (where activity_date between {{ cs_min_date() }} - {{ n }} and {{ cs_max_date() }} - {{ n }})
            as days_out_{{ n }}{{ ',' if not loop.last }}
        {%- endfor %}
    from moved_days
    where activity_date <= {{ cs_max_date() }}
    group by 1, 2
),

carried_recent as (
    select
        s.supplier_id,
        s.feature,
        {%- for n in [7, 30, 90] %}
        s.uses_{{ n }}d + coalesce(m.uses_in, 0) - coalesce(m.uses_out_{{ n }}, 0) as uses_{{ n }}d,
        {%- endfor %}
        {%- for n in [7, 30, 90] %}
        s.active_days_{{ n }}d + coalesce(m.days_in, 0) - coalesce(m.days_out_{{ n }}, 0) as active_days_{{ n }}d{{ ',' if not loop.last }}
        {%- endfor %}
    from stored_recent as s
    left join moved as m using (supplier_id, feature)
),

missing as (
    select s.supplier_id, c.feature
    from suppliers as s
    cross join catalogue as c
    where not exists (select 1 from stored_recent as t where t.supplier_id = s.supplier_id and t.feature = c.feature)
),

-- One probe of the (supplier_id, feature, activity_date) index per pair without a stored row (usually
-- none: a scan of 90 days here would cost what the carrying saves), unless no row is stored.
recounted as (
    select m.supplier_id, m.feature, r.uses_7d, r.uses_30d, r.uses_90d, r.active_days_7d, r.active_days_30d,
           r.active_days_90d
    from missing as m
    cross join as_of as a
    cross join lateral (
        select
            sum(f.uses) filter (where f.activity_date > a.as_of_date - 7) as uses_7d,
            sum(f.uses) filter (where f.activity_date > a.as_of_date - 30) as uses_30d,
            sum(f.uses) as uses_90d,
            count(*) filter (where f.activity_date > a.as_of_date - 7) as active_days_7d,
            count(*) filter (where f.activity_date > a.as_of_date - 30) as active_days_30d,
            count(*) as active_days_90d
        from {{ ref('int_supplier_feature_days') }} as f
        where f.supplier_id = m.supplier_id and f.feature = m.feature
          and f.activity_date > a.as_of_date - 90 and f.activity_date <= a.as_of_date
    ) as r
    where exists (select 1 from stored_recent)
    union all
    -- No stored table as of min_date - 1 (a re-run of the newest day, a gap): every pair, read by days.
    select
        f.supplier_id,
        f.feature,
        sum(f.uses) filter (where f.activity_date > a.as_of_date - 7),
        sum(f.uses) filter (where f.activity_date > a.as_of_date - 30),
        sum(f.uses),
        count(*) filter (where f.activity_date > a.as_of_date - 7),
        count(*) filter (where f.activity_date > a.as_of_date - 30),
        count(*)
    from feature_days as f
    cross join as_of as a
    where f.activity_date > a.as_of_date - 90
      and not exists (select 1 from stored_recent)
    group by 1, 2
),

rule_window_days as (
    select f.supplier_id, f.feature, count(*) as active_days
    from feature_days as f
    cross join as_of as a
    join catalogue as c on c.feature = f.feature
    where c.adoption_window_days not in (7, 30, 90)
      and f.activity_date > a.as_of_date - 90
      and f.activity_date > a.as_of_date - c.adoption_window_days
      and exists (select 1 from catalogue where adoption_window_days not in (7, 30, 90))
    group by 1, 2
),

recent as (
    select
        r.supplier_id,
        r.feature,
        r.uses_7d,
        r.uses_30d,
        r.uses_90d,
        r.active_days_7d,
        r.active_days_30d,
        r.active_days_90d,
        case c.adoption_window_days
            when 7 then r.active_days_7d
            when 30 then r.active_days_30d
            when 90 then r.active_days_90d
            else coalesce(w.active_days, 0)
        end as active_days_in_rule_window
    from (
        select * from carried_recent
        union all
        select * from recounted
    ) as r
    join catalogue as c on c.feature = r.feature
    left join rule_window_days as w on w.supplier_id = r.supplier_id and w.feature = r.feature
)
{%- else %}
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
{%- endif %}

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
