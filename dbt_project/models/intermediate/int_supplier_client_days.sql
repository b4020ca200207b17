-- One row per supplier, client (couple) and UTC day on which an event concerned that client.
select
    supplier_id,
    client_id,
    event_date as activity_date,
    count(*)::integer as events
from {{ ref('stg_wedsync__activity_events') }}
where {{ cs_in_window('loaded_date') }}
  and client_id is not null
group by 1, 2, 3
