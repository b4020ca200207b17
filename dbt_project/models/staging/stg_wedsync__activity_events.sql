-- Product events, typed and renamed, one row per event_id: a duplicate event_id (within a landing day
-- or across days) is counted once, and its first occurrence wins (earliest landing day, then file
-- order). event_date is the UTC day of occurred_at, which ingestion guarantees is the landing day.
--
-- Incremental (delete+insert of the run's landing days, see _wedsync__models.yml): a run deletes its
-- window [min_date, max_date] and inserts the window's events whose event_id is not already stored
-- for an earlier landing day (a unique-index lookup, so the cost does not grow with history). The
-- window always ends at the newest landing day built (cs_pipeline.transform.dbt.rebuild_window), so
-- no later day can hold a stale "first occurrence".
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ cs_delete_window('loaded_date') }}",
    tags=['daily'],
    indexes=[{'columns': ['event_id'], 'unique': true}, {'columns': ['loaded_date']}],
) }}

with source as (
    select * from {{ source('wedsync', 'activity_events') }}
    where {{ cs_in_window('_partition_date') }}
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
),

first_in_window as (
    select distinct on (event_id)
        event_id, supplier_id, user_id, event_name, occurred_at, event_date, client_id, properties, loaded_date
    from renamed
    order by event_id, loaded_date, _record_number
)

select w.*
from first_in_window as w
{% if is_incremental() -%}
where not exists (select 1 from {{ this }} as earlier where earlier.event_id = w.event_id)
{%- endif %}
