"""Health scoring, seasonality, trend, milestones and backtest: the pure functions, worked by hand."""

from __future__ import annotations

import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.backtest import backtest, calibrated_churn_risk, roc_auc
from cs_pipeline.health.milestones import MilestoneError, evaluate_milestones, load_milestones
from cs_pipeline.health.scorecard import ScorecardError, load_scorecard, shipped_scorecards
from cs_pipeline.health.scoring import add_history, score_suppliers, seasonal_index
from tests.helpers import milestone_facts, write_onboarding_scorecard

DAY = date(2025, 6, 1)
WS168 = load_scorecard("ws168")


def supplier(**overrides) -> dict:
    row = dict(supplier_id="s1", as_of_date=DAY, vendor_category="photographer", tier="starter",
               lifecycle_stage="active", days_since_last_login=5, days_since_signup=200,
               adoption_breadth=4 / 6, client_activity_rate=8 / 10, form_completion_rate=3 / 4,
               journey_completion_rate=None, active_days_30d=12, stickiness=0.25)
    row.update(overrides)
    return row


def test_specification_example_worked_by_hand():
    # Last login 5 days ago -> 20 of 30; 4 of 6 core features -> 25 x 4/6 = 16.67; 8 of 10 clients
    # active -> 20 of 25; 3 of 4 forms -> 7.5 of 10; no journeys started -> missing (not zero).
    # 64.1667 of the 90 present points, rescaled to 100 -> 71.30 -> healthy.
    [row] = score_suppliers(pd.DataFrame([supplier()]), WS168).to_dict("records")
    assert row["health_score"] == 71.30
    assert row["risk_level"] == "healthy"
    assert (row["login_recency_points"], row["feature_adoption_points"], row["client_activity_points"],
            row["form_completion_points"]) == (20.0, 16.67, 20.0, 7.5)
    assert np.isnan(row["journey_performance_points"]) and row["journey_performance_max_points"] == 10
    assert row["missing_components"] == "journey_performance"
    assert row["scorecard_version"] == "ws168-v2" and row["segment"] == "default"
    assert row["drivers"] == ("no login for 5 days: 20 of 30 points; "
                              "67% of core features adopted: 17 of 25 points")


def test_never_logged_in_reads_as_such():
    """Issue 29: a supplier who never logged in read "no login for 0 days: 0 of 30 points"."""
    frame = pd.DataFrame([supplier(days_since_last_login=None), supplier(supplier_id="s2", days_since_last_login=0,
                                                                         adoption_breadth=0.0)])
    never, recent = score_suppliers(frame, WS168).to_dict("records")
    assert never["login_recency_points"] == 0
    assert never["drivers"].startswith("never logged in: 0 of 30 points") and "0 days" not in never["drivers"]
    assert "no login for" not in recent["drivers"]  # 0 days is a real value: full points, no driver


@pytest.mark.parametrize("days, points, level", [(0, 30, "healthy"), (2, 30, "healthy"), (3, 20, "healthy"),
                                                 (6, 20, "healthy"), (7, 10, "at_risk"), (13, 10, "at_risk"),
                                                 (14, 0, "at_risk")])
def test_login_recency_tiers(days, points, level):
    [row] = score_suppliers(pd.DataFrame([supplier(days_since_last_login=days)]), WS168).to_dict("records")
    assert row["login_recency_points"] == points
    assert row["health_score"] == round(100 * (points + 16.6667 + 20 + 7.5) / 90, 2)
    assert row["risk_level"] == level


def test_risk_thresholds_and_unscored():
    frame = pd.DataFrame([
        supplier(supplier_id="low", days_since_last_login=30, adoption_breadth=0.1, client_activity_rate=0.1,
                 form_completion_rate=0.1),
        supplier(supplier_id="nothing", days_since_last_login=None, days_since_signup=None, adoption_breadth=None,
                 client_activity_rate=None, form_completion_rate=None),
    ])
    out = score_suppliers(frame, WS168).set_index("supplier_id")
    assert out.loc["low", "risk_level"] == "critical" and out.loc["low", "health_score"] < 40
    assert not out.loc["nothing", "scored"] and out.loc["nothing", "risk_level"] is None
    assert np.isnan(out.loc["nothing", "health_score"])


def test_engagement_score_of_a_supplier_without_activity_metrics_is_nan_without_a_warning():
    frame = pd.DataFrame([supplier(supplier_id="some", active_days_30d=10, stickiness=None, adoption_breadth=0.5),
                          supplier(supplier_id="none", active_days_30d=None, stickiness=None, adoption_breadth=None)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" filled every run's log
        out = score_suppliers(frame, WS168).set_index("supplier_id")
    assert out.loc["some", "engagement_score"] == 50.0  # mean of 10/20 days and 0.5 breadth, x 100
    assert np.isnan(out.loc["none", "engagement_score"])


def test_never_logged_in_gets_no_login_recency_points_however_new():
    """WS-168 as DOMAIN.md writes it (issue 13): a supplier who never logged in has had nothing happen,
    so login recency gives its worst tier (0 of 30), even for an account created yesterday; before,
    recency was counted from signup and such an account got the full 30 points."""
    frame = pd.DataFrame([supplier(supplier_id="new", days_since_last_login=None, days_since_signup=1),
                          supplier(supplier_id="old", days_since_last_login=None, days_since_signup=400)])
    out = score_suppliers(frame, WS168).set_index("supplier_id")
    assert out["login_recency_points"].tolist() == [0.0, 0.0]
    assert (out["login_recency_max_points"] == 30).all() and out["missing_components"].eq("journey_performance").all()
    assert out.loc["new", "health_score"] == out.loc["old", "health_score"]


def test_ws168_judges_new_accounts_against_the_same_adoption_bar():
    """DOMAIN.md gives WS-168 no onboarding profile: a 10-day-old account at 0.3 adoption scores the same
    adoption points as a 200-day-old one (25 x 0.3 = 7.5; the old profile gave the new one 15)."""
    frame = pd.DataFrame([supplier(supplier_id="new", lifecycle_stage="onboarding", days_since_signup=10,
                                   adoption_breadth=0.3),
                          supplier(supplier_id="old", lifecycle_stage="active", days_since_signup=200,
                                   adoption_breadth=0.3)])
    out = score_suppliers(frame, WS168).set_index("supplier_id")
    assert out["feature_adoption_points"].tolist() == [7.5, 7.5]
    assert out["segment"].tolist() == ["default", "default"]
    assert out.loc["new", "health_score"] == out.loc["old", "health_score"]
    assert WS168.overrides == []


def test_onboarding_override_is_more_lenient_on_adoption(tmp_path):
    # The override mechanism stays: a scorecard of the user's own with an onboarding profile.
    card = load_scorecard(write_onboarding_scorecard(tmp_path))
    frame = pd.DataFrame([supplier(supplier_id="new", lifecycle_stage="onboarding", adoption_breadth=0.25),
                          supplier(supplier_id="old", lifecycle_stage="active", adoption_breadth=0.25)])
    out = score_suppliers(frame, card).set_index("supplier_id")
    assert out.loc["new", "segment"] == "onboarding" and out.loc["old", "segment"] == "default"
    assert out.loc["new", "feature_adoption_points"] == 12.5  # 25 x 0.25 / 0.5
    assert out.loc["old", "feature_adoption_points"] == 6.25  # 25 x 0.25
    assert out.loc["new", "health_score"] > out.loc["old", "health_score"]


def test_ws133_split_scores_support_and_payments():
    ws133 = load_scorecard("ws133")
    assert sum(c.weight for c in ws133.components) == 100
    base = supplier(tickets_opened_30d=0, csat_30d=5, urgent_open_tickets=0, failed_invoices_30d=0)
    frame = pd.DataFrame([base, dict(base, supplier_id="s2", failed_invoices_30d=2, urgent_open_tickets=1,
                                     tickets_opened_30d=4, csat_30d=2)])
    out = score_suppliers(frame, ws133).set_index("supplier_id")
    assert (out.loc["s1", "payment_health_points"], out.loc["s2", "payment_health_points"]) == (10, 0)
    assert (out.loc["s1", "support_urgent_points"], out.loc["s2", "support_urgent_points"]) == (5, 0)
    assert out.loc["s2", "support_csat_points"] == 1.25  # 5 x (2 - 1) / (5 - 1)
    # Mid-rank percentile within the vendor category that day: equal activity -> both at 0.5.
    assert out.loc["s1", "usage_activity_points"] == 15
    assert out.loc["s2", "health_score"] < out.loc["s1", "health_score"]


def _florist_history(years: int = 2, suppliers: int = 30) -> pd.DataFrame:
    """Florists whose client activity is usually 0.45 in January and 0.9 the rest of the year."""
    rows = []
    start = date(2023, 1, 1)
    for d in range(0, 365 * years, 3):
        day = start + timedelta(days=d)
        usual = 0.45 if day.month == 1 else 0.9
        for s in range(suppliers):
            rows.append({"supplier_id": f"f{s}", "vendor_category": "florist", "as_of_date": day,
                         "client_activity_rate": usual + (s % 5 - 2) * 0.01})
    return pd.DataFrame(rows)


def test_seasonality_forgives_the_usual_january_dip_but_not_a_real_drop():
    index = seasonal_index(_florist_history(), ["client_activity_rate"], WS168.seasonality)
    january = index.set_index(["vendor_category", "month"]).loc[("florist", 1), "client_activity_rate"]
    assert january == pytest.approx(0.45 / ((0.45 + 11 * 0.9) / 12), rel=0.02)
    jan = date(2025, 1, 15)
    # A steady florist with its usual January activity, last login 5 days ago, nothing else notable.
    steady = supplier(supplier_id="steady", vendor_category="florist", as_of_date=jan, client_activity_rate=0.45,
                      adoption_breadth=0.8, form_completion_rate=0.8)
    dropped = dict(steady, supplier_id="dropped", client_activity_rate=0.1)
    frame = pd.DataFrame([steady, dropped])
    flat = score_suppliers(frame, WS168).set_index("supplier_id")
    seasonal = score_suppliers(frame, WS168, seasonal=index).set_index("supplier_id")
    assert flat.loc["steady", "risk_level"] == "at_risk"  # judged against a flat bar, the dip looks bad
    assert seasonal.loc["steady", "risk_level"] == "healthy"  # judged against a florist's January
    assert seasonal.loc["dropped", "risk_level"] == "at_risk"  # a real drop still shows
    assert seasonal.loc["steady", "client_activity_seasonal_index"] == pytest.approx(january)


def test_seasonality_falls_back_when_history_is_short():
    thin = _florist_history(years=1, suppliers=1)
    index = seasonal_index(thin, ["client_activity_rate"], WS168.seasonality)
    assert (index["client_activity_rate"] == 1.0).all()


def test_trend_deltas_and_previous_level():
    scores = score_suppliers(pd.DataFrame([supplier(as_of_date=DAY)]), WS168)
    history = pd.DataFrame({"supplier_id": ["s1", "s1", "s1"],
                            "as_of_date": [DAY - timedelta(days=7), DAY - timedelta(days=30), DAY - timedelta(days=1)],
                            "health_score": [80.0, 60.0, 75.0], "risk_level": ["healthy", "at_risk", "healthy"]})
    [row] = add_history(scores, history, WS168).to_dict("records")
    assert row["score_delta_7d"] == round(71.30 - 80.0, 2) and row["trend"] == "declining"
    assert row["score_delta_30d"] == round(71.30 - 60.0, 2) and row["previous_risk_level"] == "healthy"
    [alone] = add_history(scores, history.iloc[0:0], WS168).to_dict("records")
    assert alone["trend"] is None and np.isnan(alone["score_delta_7d"])


def test_history_days_are_all_add_history_reads():
    """customer_health reads the stored scores of history_days only (3 days for a daily run, not 31): on
    random scores and gaps, add_history gives the same columns from those days as from every earlier day."""
    from cs_pipeline.health.drivers import history_days

    rng = np.random.default_rng(3)
    days = [DAY - timedelta(days=k) for k in range(60)]
    stored = pd.DataFrame([{"supplier_id": f"s{i}", "as_of_date": d, "health_score": float(rng.integers(0, 100)),
                            "risk_level": str(rng.choice(["healthy", "at_risk", "critical"]))}
                           for i in range(4) for d in days if rng.random() < 0.8])
    for window in ([DAY], [DAY - timedelta(days=k) for k in range(0, 10, 2)]):
        scores = score_suppliers(pd.DataFrame([supplier(supplier_id=f"s{i}", as_of_date=d)
                                               for i in range(4) for d in window]), WS168)
        needed = history_days(window)
        assert not set(needed) & set(window) and (len(window) > 1 or len(needed) == 3)
        full = add_history(scores, stored, WS168)
        narrow = add_history(scores, stored.loc[stored["as_of_date"].isin(needed)], WS168)
        pd.testing.assert_frame_equal(full, narrow)


def test_scorecard_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("version: v1\nname: x\ncomponents:\n  - {name: a, label: A, metric: m, weight: 300, "
                   "rule: {type: linear, lower: 0, upper: 1}, phrase: p}\n")
    with pytest.raises(ScorecardError, match=r"mine\.yaml: components\.0\.weight"):
        load_scorecard(bad)
    with pytest.raises(ScorecardError, match="not found"):
        load_scorecard("no_such_scorecard")
    assert set(shipped_scorecards()) == {"ws168", "ws133", "purchase"}




def test_milestones_first_day_prerequisites_and_several_on_one_day():
    milestones = load_milestones()
    facts = milestone_facts([
        {"supplier_id": "s1", "as_of_date": date(2025, 6, 1), "onboarded": 1, "logins_total": 1},
        # Form completed counted before any form was sent (a data quirk): not achieved until sent.
        {"supplier_id": "s1", "as_of_date": date(2025, 6, 2), "onboarded": 1, "logins_total": 2,
         "forms_completed_total": 1},
        {"supplier_id": "s1", "as_of_date": date(2025, 6, 3), "onboarded": 1, "logins_total": 2,
         "forms_completed_total": 1, "forms_sent_total": 1, "clients_total": 10, "adopted_core_features": 6},
    ])
    out = evaluate_milestones(facts, milestones, pd.DataFrame(columns=["supplier_id", "milestone_type", "achieved_at"]))
    got = dict(zip(out["milestone_type"], out["achieved_at"]))
    assert got["account_setup"] == date(2025, 6, 1) and got["first_login"] == date(2025, 6, 1)
    assert got["first_form_completed"] == got["first_form_sent"] == date(2025, 6, 3)
    # Several on one day, prerequisites first: first client, ten clients; core, then all core.
    for m in ("first_client_added", "ten_clients", "core_features_adopted", "all_core_features_adopted"):
        assert got[m] == date(2025, 6, 3)
    assert "fifty_clients" not in got
    assert set(out["category"]) <= {"setup", "first_use", "proficiency", "mastery", "growth", "success", "advocacy"}


def test_milestones_are_never_lost_and_only_move_earlier():
    milestones = load_milestones()
    stored = pd.DataFrame({"supplier_id": ["s1"], "milestone_type": ["first_login"], "achieved_at": [date(2025, 6, 5)]})
    later = milestone_facts([{"supplier_id": "s1", "as_of_date": date(2025, 6, 9), "logins_total": 3}])
    assert evaluate_milestones(later, milestones, stored).empty  # nothing new, nothing lost
    backfill = milestone_facts([{"supplier_id": "s1", "as_of_date": date(2025, 6, 2), "logins_total": 1}])
    out = evaluate_milestones(backfill, milestones, stored)
    assert out[["milestone_type", "achieved_at"]].values.tolist() == [["first_login", date(2025, 6, 2)]]


def test_milestone_file_errors(tmp_path):
    cyclic = tmp_path / "m.yaml"
    cyclic.write_text("milestones:\n"
                      "  - {type: a, category: setup, description: A, prerequisites: [b], criterion: {all: [{metric: logins_total, op: '>=', value: 1}]}}\n"
                      "  - {type: b, category: setup, description: B, prerequisites: [a], criterion: {all: [{metric: logins_total, op: '>=', value: 1}]}}\n")
    with pytest.raises(MilestoneError, match="cycle"):
        load_milestones(cyclic)
    wrong = tmp_path / "w.yaml"
    wrong.write_text("milestones:\n  - {type: a, category: fame, description: A, criterion: {all: [{metric: logins_total, op: '>=', value: 1}]}}\n")
    with pytest.raises(MilestoneError, match=r"w\.yaml: milestones\.0\.category"):
        load_milestones(wrong)


def test_backtest_metrics():
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert roc_auc(np.array([0.5]), np.array([True])) is None
    rng = np.random.default_rng(0)
    n = 400
    health = rng.uniform(0, 100, n)
    churn_prob = np.where(health < 40, 0.5, 0.02)
    churned = rng.random(n) < churn_prob
    scores = pd.DataFrame({"supplier_id": [f"s{i}" for i in range(n)], "as_of_date": DAY, "health_score": health,
                           "risk_level": np.where(health < 40, "critical", np.where(health < 70, "at_risk", "healthy")),
                           "scorecard_version": "t"})
    churn_dates = pd.Series(np.where(churned, np.datetime64(DAY + timedelta(days=10)), np.datetime64("NaT")),
                            index=scores["supplier_id"])
    result = backtest(scores, churn_dates)
    assert result.auc > 0.8 and result.critical_lift > 2
    assert result.churn_rate_by_level["critical"] > result.churn_rate_by_level["healthy"]
    assert result.calibrated and result.calibration["0-10"] > result.calibration["90-100"]
    risk = calibrated_churn_risk(np.array([5.0, 95.0]), result.calibration)
    assert risk[0] > risk[1]
