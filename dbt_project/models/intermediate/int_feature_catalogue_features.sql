-- One row per feature of the catalogue seed, with its core flag and adoption rule.
{{ config(materialized='view', tags=[]) }}

select
    feature,
    bool_or(is_core) as is_core,
    max(adoption_min_active_days) as adoption_min_active_days,
    max(adoption_window_days) as adoption_window_days
from {{ ref('feature_catalogue') }}
group by feature
