-- The marts read 90 days of history for rolling windows: an adoption window longer than that, or a
-- rule that can never be met, is a catalogue error.
select feature, adoption_window_days, adoption_min_active_days
from {{ ref('int_feature_catalogue_features') }}
where adoption_window_days not between 1 and 90
   or adoption_min_active_days not between 1 and adoption_window_days
