-- The latest supplier snapshot: one row per supplier as of the newest loaded suppliers day.
with latest as (
    select max(_partition_date) as snapshot_date from {{ source('wedsync', 'suppliers') }}
)

select s.*
from {{ ref('stg_wedsync__supplier_snapshots') }} as s
where s.snapshot_date = (select snapshot_date from latest)
