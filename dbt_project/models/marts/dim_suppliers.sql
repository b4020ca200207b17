-- One row per supplier as of the latest snapshot, with its lifecycle stage. No personal data (the BI role
-- reads marts): supplier names and e-mail addresses stay in raw/staging.
with suppliers as (
    select * from {{ ref('stg_wedsync__suppliers') }}
)

select
    supplier_id,
    vendor_category,
    tier,
    country,
    (signed_up_at at time zone 'UTC')::date as signup_date,
    (onboarded_at at time zone 'UTC')::date as onboarded_date,
    status,
    (cancelled_at at time zone 'UTC')::date as cancelled_date,
    {{ lifecycle_stage('status', 'signed_up_at', 'snapshot_date') }} as lifecycle_stage,
    mrr,
    currency,
    snapshot_date as as_of_date
from suppliers
