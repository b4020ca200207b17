"""churn_features.feature_usage: the one-pass window sums equal the per-day grouped sums they replaced
(random feature days with gaps, repeated days, null uses, features never used, suppliers without feature
days and as-of days before any activity)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.churn_features import build_features, feature_usage

FEATURES = ["forms", "journeys", "messaging", "never_used"]


def reference_usage(rows: pd.DataFrame, feature_days: pd.DataFrame, features: list[str],
                    window_days: int = 30) -> pd.DataFrame:
    """The previous implementation: one grouped pass per as-of day (kept here as the reference)."""
    columns = [f"feat__{f}__{kind}" for f in features for kind in ("uses_30d", "active_days_30d")]
    out = pd.DataFrame(0.0, index=range(len(rows)), columns=columns)
    fd = feature_days.loc[feature_days["feature"].isin(features), ["supplier_id", "feature", "activity_date", "uses"]]
    fd = fd.assign(activity_date=pd.to_datetime(fd["activity_date"]), supplier_id=fd["supplier_id"].astype(str))
    days = pd.to_datetime(rows["as_of_date"]).to_numpy()
    suppliers = rows["supplier_id"].astype(str).to_numpy()
    for day in np.unique(days):
        inside = fd.loc[(fd["activity_date"] <= day) & (fd["activity_date"] > day - np.timedelta64(window_days, "D"))]
        if inside.empty:
            continue
        sums = inside.groupby(["supplier_id", "feature"])["uses"].agg(["sum", "count"]).unstack("feature")
        positions = np.flatnonzero(days == day)
        for feature in sums.columns.get_level_values(1).unique():
            out.iloc[positions, out.columns.get_loc(f"feat__{feature}__uses_30d")] = \
                sums[("sum", feature)].reindex(suppliers[positions]).fillna(0.0).to_numpy(dtype=float)
            out.iloc[positions, out.columns.get_loc(f"feat__{feature}__active_days_30d")] = \
                sums[("count", feature)].reindex(suppliers[positions]).fillna(0.0).to_numpy(dtype=float)
    return out


def random_inputs(seed: int, suppliers: int = 40, days: int = 120):
    rng = np.random.default_rng(seed)
    first = date(2025, 1, 1)
    ids = [f"s{i}" for i in range(suppliers)]
    n = suppliers * 25
    fd = pd.DataFrame({
        "supplier_id": rng.choice(ids[: suppliers - 5], n),  # the last five never use a feature
        "feature": rng.choice(["forms", "journeys", "messaging", "not_in_catalogue"], n),
        # clustered days with gaps longer than the window
        "activity_date": [first + timedelta(days=int(d)) for d in rng.choice(
            np.r_[np.arange(0, 20), np.arange(55, 70), np.arange(100, 120)], n)],
        "uses": rng.integers(1, 9, n).astype(float),
    })
    fd.loc[rng.random(n) < 0.05, "uses"] = np.nan
    rows = pd.DataFrame({"supplier_id": rng.choice(ids, 300),
                         "as_of_date": [first + timedelta(days=int(d)) for d in rng.integers(-5, days + 10, 300)]})
    return rows, fd


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_feature_usage_equals_the_per_day_grouped_sums(seed):
    rows, fd = random_inputs(seed)
    expected = reference_usage(rows, fd, FEATURES)
    got = feature_usage(rows, fd, FEATURES)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (got["feat__never_used__uses_30d"] == 0).all()
    assert got["feat__forms__active_days_30d"].gt(0).any() and got["feat__forms__active_days_30d"].eq(0).any()


def test_feature_usage_window_edges():
    """A use exactly on the as-of day counts, one on day D - 30 does not, one on D - 29 does."""
    day = date(2025, 3, 31)
    fd = pd.DataFrame({"supplier_id": ["a", "a", "a", "a"], "feature": ["forms"] * 4,
                       "activity_date": [day, day - timedelta(days=29), day - timedelta(days=30),
                                         day + timedelta(days=1)],
                       "uses": [1, 10, 100, 1000]})
    rows = pd.DataFrame({"supplier_id": ["a", "b"], "as_of_date": [day, day]})
    got = feature_usage(rows, fd, ["forms"])
    assert got["feat__forms__uses_30d"].tolist() == [11.0, 0.0]
    assert got["feat__forms__active_days_30d"].tolist() == [2.0, 0.0]
    pd.testing.assert_frame_equal(got, reference_usage(rows, fd, ["forms"]), check_exact=True)


def test_build_features_keeps_row_order_and_values():
    rows, fd = random_inputs(4)
    rows = rows.assign(events_30d=np.arange(len(rows), dtype=np.int64), stickiness=np.linspace(0, 1, len(rows)))
    rows.loc[::7, "stickiness"] = np.nan
    built = build_features(rows, fd, FEATURES)
    assert built["supplier_id"].tolist() == rows["supplier_id"].tolist()
    np.testing.assert_array_equal(built["events_30d"].to_numpy(), np.log1p(np.arange(len(rows), dtype=float)))
    assert built["stickiness__missing"].sum() == rows["stickiness"].isna().sum()
    expected = np.log1p(reference_usage(rows, fd, FEATURES)["feat__journeys__uses_30d"].to_numpy())
    np.testing.assert_array_equal(built["feat__journeys__uses_30d"].to_numpy(), expected)
