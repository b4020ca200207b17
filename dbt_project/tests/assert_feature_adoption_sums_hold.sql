-- A daily run carries fct_feature_adoption's 7/30/90-day uses and active days forward from the stored
-- table of the day before its window (issue 30), trusting it. A stored row that drifted shows here: a
-- count out of its range (negative, more active days than days or than uses, a shorter window holding
-- more than a longer one), or, for a sample of up to 100 suppliers (a different sample each day), 7- and
-- 30-day figures (the ones the health score reads) that differ from a recount of their feature days.
-- Remedy: re-run from the first wrong day with --full-refresh. One row per failing supplier and feature.
-- Severity warn: a drift is shown, never halts the daily run (a recount run repairs it). The meta ref makes it
-- an asset check of the mart in Dagster (a singular test reading several models has no asset otherwise).
{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'fct_feature_adoption'}}}) }}
with adoption as (
    select * from {{ ref('fct_feature_adoption') }}
),

out_of_range as (
    select supplier_id, feature, 'out of range' as problem
    from adoption
    where least(uses_7d, active_days_7d) < 0
       or active_days_7d > 7 or active_days_30d > 30 or active_days_90d > 90
       or active_days_7d > active_days_30d or active_days_30d > active_days_90d
       or uses_7d > uses_30d or uses_30d > uses_90d
       or active_days_7d > uses_7d or active_days_30d > uses_30d or active_days_90d > uses_90d
),

sample as (
    select supplier_id, as_of_date
    from (select distinct supplier_id, as_of_date from adoption) as s
    order by md5(supplier_id || as_of_date::text)
    limit 100
),

recount as (
    select f.supplier_id, f.feature,
           sum(f.uses) filter (where f.activity_date > s.as_of_date - 7) as uses_7d,
           sum(f.uses) as uses_30d,
           count(*) filter (where f.activity_date > s.as_of_date - 7) as active_days_7d,
           count(*) as active_days_30d
    from {{ ref('int_supplier_feature_days') }} as f
    join sample as s on s.supplier_id = f.supplier_id
    where f.activity_date between (select min(as_of_date) from sample) - 29 and (select max(as_of_date) from sample)
      and f.activity_date between s.as_of_date - 29 and s.as_of_date
    group by 1, 2
),

differs as (
    select a.supplier_id, a.feature, 'differs from a recount' as problem
    from adoption as a
    join sample as s using (supplier_id)
    left join recount as r using (supplier_id, feature)
    where (a.uses_7d, a.uses_30d, a.active_days_7d, a.active_days_30d)
          is distinct from
          (coalesce(r.uses_7d, 0), coalesce(r.uses_30d, 0), coalesce(r.active_days_7d, 0), coalesce(r.active_days_30d, 0))
)

select * from out_of_range
union all
select * from differs
