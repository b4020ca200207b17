-- The latest supplier snapshot: one row per supplier as of the newest loaded suppliers day.
with latest as (
    select max(partition_date) as snapshot_date
    from {{ source('cs_ops', 'load_audit') }}
    where source = 'suppliers'
)

select s.*
from {{ ref('stg_wedsync__supplier_snapshots') }} as s
where s.snapshot_date = (select snapshot_date from latest)
