"""The row-volume gate fits small datasets (issue 17): robust baseline (trailing median), a minimum-count
floor, weekday awareness, bounds per source in the suite."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd

from cs_pipeline.quality.gx import GateRunner, VolumeBounds, day_parameters, volume_band, volume_bounds


def _row_count(result) -> dict:
    [detail] = [d for d in result.details if d["expectation"] == "expect_table_row_count_to_be_between"]
    return detail


def test_a_quiet_day_of_a_small_dataset_passes_the_real_suite(tmp_path):
    day = date(1997, 1, 14)
    history = [(day - timedelta(days=n), rows) for n, rows in zip(range(7, 0, -1), [9, 7, 12, 8, 10, 11, 9])]
    band = volume_band(history, day, volume_bounds("raw_activity_events"))
    assert band["min_rows"] == 0  # baseline 9 rows/day is under the floor: no lower bound
    frame = pd.DataFrame({"event_id": ["e1"], "supplier_id": ["s1"], "user_id": ["u1"], "event_name": ["login"],
                          "occurred_at": [pd.Timestamp("1997-01-14T08:00:00Z")], "client_id": [None],
                          "properties": [None], "_rejected_share": [0.0]})
    runner = GateRunner(tmp_path / "docs")
    params = {**day_parameters(day), **band, "max_rejected_share": 0.05, "event_names": ["login"]}
    result = runner.validate(frame, "raw_activity_events", params, "quiet")
    assert _row_count(result)["success"] and not result.blocking_failed
    # The same quiet day against a busy history is still blocked, and the check says what it saw.
    busy = volume_band([(d, 1000) for d, _ in history], day, volume_bounds("raw_activity_events"))
    blocked = runner.validate(frame, "raw_activity_events", {**params, **busy}, "busy")
    assert blocked.blocking_failed and _row_count(blocked)["observed_value"] == 1


def test_baseline_is_the_median_and_follows_the_weekday():
    assert volume_band([1000, 1000, 1000]) == {"min_rows": 300, "max_rows": 3001}
    assert volume_band([1000, 1000, 5, 1000, 90000])["min_rows"] == 300  # one outage or spike does not move it
    assert volume_band([1000, 1000]) == {"min_rows": 0, "max_rows": 10**12}  # too little history
    monday = date(2025, 6, 9)
    history = [(monday - timedelta(days=n), 100 if (monday - timedelta(days=n)).weekday() == 0 else 1000)
               for n in range(1, 22)]
    assert volume_band(history, monday)["min_rows"] == 30  # Mondays are quiet: judged against Mondays
    assert volume_band(history, monday + timedelta(days=1))["min_rows"] == 300
    assert volume_band(history, monday, VolumeBounds(weekday_aware=False))["min_rows"] == 300


def test_bounds_are_configured_per_source_in_the_suite(tmp_path):
    suite = {"name": "raw_x", "expectations": [{
        "type": "expect_table_row_count_to_be_between",
        "kwargs": {"min_value": {"$PARAMETER": "min_rows"}, "max_value": {"$PARAMETER": "max_rows"}},
        "meta": {"volume": {"low": 0.5, "high": 2.0, "floor_rows": 5, "min_history_days": 1}}}]}
    (tmp_path / "raw_x.json").write_text(json.dumps(suite))
    bounds = volume_bounds("raw_x", tmp_path)
    assert bounds == VolumeBounds(low=0.5, high=2.0, floor_rows=5, min_history_days=1)
    assert volume_band([100], bounds=bounds) == {"min_rows": 50, "max_rows": 201}
    assert volume_bounds("raw_activity_events") == VolumeBounds()  # shipped suites state the defaults
