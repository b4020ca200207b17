-- Product events, typed and renamed, deduplicated by event_id within their landing day.
-- event_date is the UTC day of occurred_at, which ingestion guarantees is the landing day.
with source as (
    select * from {{ source('wedsync', 'activity_events') }}
),

renamed as (
    select
        event_id,
        supplier_id,
        user_id,
        event_name,
        occurred_at,
        (occurred_at at time zone 'UTC')::date as event_date,
        client_id,
        properties,
        _partition_date as loaded_date,
        _record_number
    from source
)

select distinct on (loaded_date, event_id)
    event_id, supplier_id, user_id, event_name, occurred_at, event_date, client_id, properties, loaded_date
from renamed
order by loaded_date, event_id, _record_number
