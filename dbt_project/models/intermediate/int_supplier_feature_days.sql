-- One row per supplier, feature and UTC day with at least one use of the feature.
-- The (supplier_id, feature, activity_date) index serves fct_feature_adoption's daily path (a supplier or
-- feature without a stored row reads its own 90 days through it): macros/indexes.sql.
{{ config(post_hook="{{ cs_btree_index(['supplier_id', 'feature', 'activity_date']) }}") }}

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
