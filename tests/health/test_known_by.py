"""Issue 28, the pure rules of ``known_by``: which backtest calibration and which churn model a day may use."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.backtest import calibrated_churn_risk
from cs_pipeline.health.known_by import churn_risk_as_of, models_by_day

D = date(2025, 3, 1)


def _calibrations(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"last_day": last, "horizon_days": horizon, "calibration": cal,
                          "evaluated_at": datetime(2025, 6, 1, tzinfo=timezone.utc) + timedelta(hours=h)}
                         for last, horizon, cal, h in rows])


def test_a_calibration_counts_from_the_day_after_its_horizon_ended():
    old, new = {"0-10": 0.5, "40-50": 0.2}, {"0-10": 0.9}
    # Evaluated in this order: ``new`` (an earlier backtest re-run last) is newest by evaluated_at.
    cals = _calibrations((D - timedelta(days=40), 30, old, 0), (D - timedelta(days=30), 30, new, 1))
    health = np.array([5.0, 45.0, 5.0, 5.0, np.nan])
    days = [D - timedelta(days=10), D - timedelta(days=9), D, D + timedelta(days=1), D + timedelta(days=1)]
    default = 100 - health
    got = churn_risk_as_of(health, days, default, cals)
    # 10 days before D: nothing known (last_day + 30 = D - 10 is not before it): the scorecard's 100 - health.
    # 9 days before D: the older one; D itself: still the older one; the day after D: the newer one.
    assert got[0] == 95.0
    assert got[1] == pytest.approx(20.0)
    assert got[2] == pytest.approx(50.0)
    assert got[3] == pytest.approx(90.0) and np.isnan(got[4])
    # Rows are independent of which other days are in the window.
    assert churn_risk_as_of(health[2:3], days[2:3], default[2:3], cals)[0] == got[2]


def test_ties_take_the_latest_evaluation_and_no_backtest_keeps_the_default():
    first, rerun = {"0-10": 0.3}, {"0-10": 0.4}
    cals = _calibrations((D - timedelta(days=60), 30, rerun, 5), (D - timedelta(days=60), 30, first, 1))
    health = np.array([3.0])
    assert churn_risk_as_of(health, [D], 100 - health, cals)[0] == pytest.approx(40.0)
    empty = cals.iloc[:0]
    assert churn_risk_as_of(health, [D], 100 - health, empty)[0] == 97.0
    # An uncalibrated backtest (too few rows) known by the day: the fallback, as calibrated_churn_risk says.
    bare = _calibrations((D - timedelta(days=40), 30, {}, 9))
    assert churn_risk_as_of(health, [D], 100 - health, bare)[0] == calibrated_churn_risk(health, {})[0]


def test_a_day_takes_the_model_trained_as_of_it_or_the_pinned_one():
    models = pd.DataFrame({
        "version": ["a", "b", "a-retrained"],
        "training_as_of": [D, D + timedelta(days=10), D],
        "trained_at": pd.to_datetime(["2025-03-01T03:00Z", "2025-03-11T03:00Z", "2025-04-01T03:00Z"]),
    })
    days = [D - timedelta(days=1), D, D + timedelta(days=9), D + timedelta(days=10), D + timedelta(days=30)]
    # Trained as of D: known from the day after D (the daily run of D came before the training).
    assert models_by_day(models, days) == dict(zip(days, [None, None, "a-retrained", "a-retrained", "b"]))
    # Pinned: the only candidate, under the same rule (never a day on or before its training as-of day).
    assert models_by_day(models, days, pinned="a") == dict(zip(days, [None, None, "a", "a", "a"]))
    assert models_by_day(models, days, pinned="b") == dict(zip(days, [None, None, None, None, "b"]))
    assert models_by_day(models, days, pinned="unknown") == dict.fromkeys(days, "unknown")  # load_model refuses
    assert models_by_day(models.iloc[:0], days) == dict.fromkeys(days)
