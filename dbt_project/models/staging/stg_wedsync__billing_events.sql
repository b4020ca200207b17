-- Billing events, typed and renamed, deduplicated by billing_event_id within their landing day.
with source as (
    select * from {{ source('wedsync', 'billing_events') }}
),

renamed as (
    select
        billing_event_id,
        supplier_id,
        occurred_at,
        (occurred_at at time zone 'UTC')::date as event_date,
        event_type,
        amount,
        coalesce(currency, 'GBP') as currency,
        tier,
        _partition_date as loaded_date,
        _record_number
    from source
)

select distinct on (loaded_date, billing_event_id)
    billing_event_id, supplier_id, occurred_at, event_date, event_type, amount, currency, tier, loaded_date
from renamed
order by loaded_date, billing_event_id, _record_number
