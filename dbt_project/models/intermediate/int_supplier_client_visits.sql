-- One row per supplier, client (couple) and UTC day on which an event concerned the client, with the
-- client's previous active day (null on its first). supplier_engagement_daily counts distinct clients in
-- rolling windows from it without sorting 90 days of client days on every run (issue 18).
--
-- Incremental like the other intermediate models: a run deletes and rebuilds its window; the previous
-- active day of a client's first day in the window is looked up in the rows stored before the window
-- (the index on supplier_id, client_id, activity_date). The window always ends at the newest day built
-- (cs_pipeline.transform.dbt.rebuild_window), so no later row keeps a stale previous day.
{{ config(indexes=[{'columns': ['supplier_id', 'client_id', 'activity_date']}]) }}

with client_days as (
    select supplier_id, client_id, activity_date,
           lag(activity_date) over (partition by supplier_id, client_id order by activity_date) as previous_in_window
    from {{ ref('int_supplier_client_days') }}
    where {{ cs_in_window('activity_date') }}
)

select
    supplier_id,
    client_id,
    activity_date,
    {% if is_incremental() -%}
    case
        when previous_in_window is not null then previous_in_window
        else (select max(t.activity_date) from {{ this }} as t
              where t.supplier_id = client_days.supplier_id and t.client_id = client_days.client_id
                and t.activity_date < {{ cs_min_date() }})
    end
    {%- else -%}
    previous_in_window
    {%- endif %} as previous_activity_date
from client_days
