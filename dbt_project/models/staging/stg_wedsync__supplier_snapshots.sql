-- Every daily supplier snapshot, typed and renamed; one row per (snapshot_date, supplier_id).
-- Filters on snapshot_date reach the raw partitions (it is the DISTINCT ON key).
with source as (
    select * from {{ source('wedsync', 'suppliers') }}
),

renamed as (
    select
        _partition_date as snapshot_date,
        supplier_id,
        business_name,
        vendor_category,
        tier,
        country,
        signed_up_at,
        onboarded_at,
        status,
        cancelled_at,
        mrr,
        coalesce(currency, 'GBP') as currency,
        email is not null as has_email,
        _record_number
    from source
)

select distinct on (snapshot_date, supplier_id)
    snapshot_date, supplier_id, business_name, vendor_category, tier, country, signed_up_at,
    onboarded_at, status, cancelled_at, mrr, currency, has_email
from renamed
order by snapshot_date, supplier_id, _record_number
