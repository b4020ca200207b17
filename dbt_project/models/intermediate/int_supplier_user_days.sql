-- One row per supplier, team member and UTC day on which the member was active.
select
    supplier_id,
    user_id,
    event_date as activity_date,
    count(*) filter (where event_name = 'login')::integer as logins,
    count(*)::integer as events
from {{ ref('stg_wedsync__activity_events') }}
where {{ cs_in_window('loaded_date') }}
  and user_id is not null
group by 1, 2, 3
