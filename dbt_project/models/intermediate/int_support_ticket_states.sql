-- The state of every support ticket as the marts last saw it (a copy of stg_wedsync__support_tickets,
-- rebuilt at the end of each daily run). Before the next run, cs_pipeline compares it with the
-- current staging view: the earliest opened day of a ticket that appeared, disappeared or changed
-- (a late ticket, a corrected file) is where that run's rebuild starts (rebuild_window).
{{ config(materialized='table', tags=['daily']) }}

select ticket_id, supplier_id, opened_date, resolved_date, priority, csat
from {{ ref('stg_wedsync__support_tickets') }}
-- depends_on: {{ ref('supplier_engagement_daily') }}
