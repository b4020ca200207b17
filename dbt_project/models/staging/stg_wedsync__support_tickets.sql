-- Support tickets in their latest known state: a ticket appears in the file of every day it is
-- opened or updated; the newest appearance wins.
with source as (
    select * from {{ source('wedsync', 'support_tickets') }}
),

renamed as (
    select
        ticket_id,
        supplier_id,
        opened_at,
        resolved_at,
        (opened_at at time zone 'UTC')::date as opened_date,
        (resolved_at at time zone 'UTC')::date as resolved_date,
        channel,
        category,
        priority,
        csat,
        first_response_minutes,
        _partition_date as last_seen_date,
        _record_number
    from source
)

select distinct on (ticket_id)
    ticket_id, supplier_id, opened_at, resolved_at, opened_date, resolved_date, channel, category,
    priority, csat, first_response_minutes, last_seen_date
from renamed
order by ticket_id, last_seen_date desc, _record_number desc
