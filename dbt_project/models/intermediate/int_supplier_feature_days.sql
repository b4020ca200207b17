-- One row per supplier, feature and UTC day with at least one use of the feature.
with events as (
    select supplier_id, event_name, event_date
    from {{ ref('stg_wedsync__activity_events') }}
    where {{ cs_in_window('loaded_date') }}
),

catalogue as (
    select event_name, feature, is_core from {{ ref('feature_catalogue') }}
)

select
    e.supplier_id,
    c.feature,
    c.is_core,
    e.event_date as activity_date,
    count(*)::integer as uses
from events as e
join catalogue as c on c.event_name = e.event_name
group by 1, 2, 3, 4
