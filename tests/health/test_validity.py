"""Issue 13: health scores that mean what they say. No activity is not missing data, percentile ties,
validated overrides, the configurable churn label and backtest metrics, fitted scorecards (pure functions)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.scorecard import ScorecardError, load_scorecard, shipped_scorecards
from cs_pipeline.health.scoring import score_suppliers
from tests.helpers import write_onboarding_scorecard

DAY = date(2025, 6, 1)


def account(supplier_id: str, **metrics) -> dict:
    """A row of marts.supplier_engagement_daily with every metric any shipped scorecard reads."""
    row = dict(supplier_id=supplier_id, as_of_date=DAY, vendor_category="photographer", tier="starter",
               lifecycle_stage="active", days_since_signup=400, adoption_breadth=0.5, tickets_opened_30d=0,
               csat_30d=None, urgent_open_tickets=0, failed_invoices_30d=0, tenure_days=400,
               active_days_lifetime=40, active_days_per_30d_lifetime=3.0, mean_days_between_active_days=10.0,
               revenue_lifetime=900.0, revenue_90d=0.0)
    row.update(metrics)
    return row


def weekly_history(seed: int, draw, weeks: int = 12, accounts: int = 150) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic backtest history: ``accounts`` rows a week for ``weeks`` weeks from DAY. ``draw(rng)``
    returns (the row's metrics, its churn probability); the label is drawn with that probability.
    Returns (engagement rows as ``account`` rows, bool labels)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for week in range(weeks):
        for i in range(accounts):
            metrics, churn_probability = draw(rng)
            rows.append(account(f"s{i}", as_of_date=DAY + timedelta(days=7 * week), **metrics))
            labels.append(rng.random() < churn_probability)
    return pd.DataFrame(rows), np.array(labels)


INACTIVE_60_DAYS = dict(days_since_last_login=60, days_since_last_activity=60, active_days_30d=0, stickiness=None,
                        client_activity_rate=None, form_completion_rate=None, journey_completion_rate=None,
                        active_days_90d=4, recency_to_cadence=6.0)
ACTIVE_YESTERDAY = dict(days_since_last_login=1, days_since_last_activity=1, active_days_30d=1, stickiness=0.05,
                        client_activity_rate=0.0, form_completion_rate=0.0, journey_completion_rate=0.0,
                        active_days_90d=5, recency_to_cadence=0.1)


def _population() -> pd.DataFrame:
    """40 accounts, most of them dormant (as on a real purchase log), plus the two being compared."""
    rows = [account(f"dormant{i}", **INACTIVE_60_DAYS | {"days_since_last_login": 60 + i,
                                                         "days_since_last_activity": 60 + i})
            for i in range(37)]
    rows += [account("busy", **ACTIVE_YESTERDAY | {"active_days_30d": 20, "stickiness": 0.4})]
    rows += [account("inactive", **INACTIVE_60_DAYS), account("active", **ACTIVE_YESTERDAY)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", sorted(shipped_scorecards()))
def test_sixty_days_inactive_scores_below_active_yesterday(name):
    card = shipped_scorecards()[name]
    out = score_suppliers(_population(), card).set_index("supplier_id")
    assert out.loc["inactive", "scored"] and out.loc["active", "scored"]
    assert out.loc["inactive", "health_score"] < out.loc["active", "health_score"], (
        name, out.loc[["inactive", "active"], ["health_score", "missing_components"]].to_dict("index"))


def test_what_null_means_per_metric_and_per_component():
    ws133 = load_scorecard("ws133")
    frame = pd.DataFrame([account("a", **INACTIVE_60_DAYS), account("b", **ACTIVE_YESTERDAY)])
    out = score_suppliers(frame, ws133).set_index("supplier_id")
    # No active day in 30 days: stickiness is null because nothing happened -> its worst value, 0 of 20.
    assert out.loc["a", "engagement_quality_points"] == 0 and out.loc["a", "engagement_quality_max_points"] == 20
    # No rated ticket: CSAT has no such data -> missing, the other weights are rescaled.
    assert "support_csat" in out.loc["a", "missing_components"].split(",")
    assert "engagement_quality" not in out.loc["a", "missing_components"].split(",")
    # A component can override: exclude (missing) / zero_points.
    data = ws133.model_dump()
    data["components"][2]["missing"] = "exclude"
    data["components"][4]["missing"] = "zero_points"
    changed = type(ws133).model_validate(data)
    out = score_suppliers(frame, changed).set_index("supplier_id")
    assert np.isnan(out.loc["a", "engagement_quality_points"])
    assert out.loc["a", "support_csat_points"] == 0 and "support_csat" not in out.loc["a", "missing_components"]


def test_worst_value_of_a_step_rule_and_a_lower_is_better_percentile():
    ws168 = load_scorecard("ws168")
    # Never logged in and no signup date: the login recency's worst tier (0 points), not missing.
    out = score_suppliers(pd.DataFrame([account("x", **ACTIVE_YESTERDAY | {"days_since_last_login": None},
                                                days_since_signup=None)]), ws168)
    assert out.loc[0, "login_recency_points"] == 0 and out.loc[0, "login_recency_max_points"] == 30
    purchase = load_scorecard("purchase")
    frame = pd.DataFrame([account("never", **ACTIVE_YESTERDAY | {"days_since_last_activity": None}),
                          account("old", **ACTIVE_YESTERDAY | {"days_since_last_activity": 300}),
                          account("new", **ACTIVE_YESTERDAY | {"days_since_last_activity": 2})])
    out = score_suppliers(frame, purchase).set_index("supplier_id")
    # Never active ranks below the 300-day silence: mid-rank percentiles 1/6, 3/6, 5/6 of 35 points.
    assert out["recency_points"].round(2).to_dict() == {"never": 5.83, "old": 17.5, "new": 29.17}


def test_account_with_no_data_at_all_stays_unscored():
    ws133 = load_scorecard("ws133")
    empty = {k: None for k in account("x")} | {"supplier_id": "x", "as_of_date": DAY, "vendor_category": "florist",
                                               "tier": "starter", "lifecycle_stage": "active",
                                               "days_since_last_login": None, "active_days_30d": None,
                                               "stickiness": None}
    out = score_suppliers(pd.DataFrame([empty]), ws133)
    assert not out.loc[0, "scored"] and np.isnan(out.loc[0, "health_score"])


def test_percentile_ties_get_the_mid_rank():
    ws133 = load_scorecard("ws133")
    # 93 of 100 accounts active on 0 of the last 30 days, 7 on 1..7 days.
    rows = [account(f"z{i}", **ACTIVE_YESTERDAY | {"active_days_30d": 0}) for i in range(93)]
    rows += [account(f"a{i}", **ACTIVE_YESTERDAY | {"active_days_30d": i + 1}) for i in range(7)]
    out = score_suppliers(pd.DataFrame(rows), ws133).set_index("supplier_id")
    # Mid-rank: (average rank 47 - 0.5) / 100 = 0.465 of 30 points, not the 93rd percentile.
    assert out.loc["z0", "usage_activity_points"] == pytest.approx(30 * 0.465, abs=0.01)
    assert out.loc["a6", "usage_activity_points"] == pytest.approx(30 * 0.995, abs=0.01)
    assert out.loc["a0", "usage_activity_points"] == pytest.approx(30 * 0.935, abs=0.01)


OVERRIDE_YAML = """
version: bad-override
name: Override with too small a weight
components:
  - name: login_recency
    label: Login recency
    metric: days_since_last_login
    weight: 30
    rule: {type: step, tiers: [{lt: 3, points: 30}, {lt: 7, points: 20}], otherwise: 0}
    phrase: "no login for {metric} days"
  - name: feature_adoption
    label: Feature adoption
    metric: adoption_breadth
    weight: 70
    rule: {type: linear, lower: 0, upper: 1}
    phrase: "{metric} adopted"
overrides:
  - name: onboarding
    when: {lifecycle_stage: [onboarding]}
    components:
      login_recency: {weight: 5}
"""


def test_override_is_validated_like_the_scorecard(tmp_path):
    path = tmp_path / "bad_override.yaml"
    path.write_text(OVERRIDE_YAML)
    with pytest.raises(ScorecardError) as err:
        load_scorecard(path)
    message = str(err.value)
    assert message.startswith("bad_override.yaml: ")
    assert "overrides.0.components.login_recency" in message and "weight 5.0 is below the 30.0 points" in message
    # A valid override still applies, and its profile can never score above 100.
    path.write_text(OVERRIDE_YAML.replace("login_recency: {weight: 5}", "login_recency: {weight: 30}"))
    card = load_scorecard(path)
    frame = pd.DataFrame([dict(supplier_id="s", as_of_date=DAY, vendor_category="x", tier="t",
                               lifecycle_stage="onboarding", days_since_last_login=0, adoption_breadth=1.0)])
    assert score_suppliers(frame, card).loc[0, "health_score"] == 100


# --- item 5: any churn definition in the backtest --------------------------------------------------

from datetime import timedelta  # noqa: E402

from cs_pipeline.health.backtest import (  # noqa: E402
    BacktestError,
    backtest,
    inactivity_labels,
    label_churn,
)
from cs_pipeline.health.diagnose import diagnose, misleading_warning, problems  # noqa: E402
from cs_pipeline.health.scorecard import Churn  # noqa: E402


def test_inactivity_label_looks_only_at_the_horizon_after_the_as_of_day():
    scores = pd.DataFrame({"supplier_id": ["a", "a", "b", "c"],
                           "as_of_date": [DAY, DAY + timedelta(days=20), DAY, DAY]})
    activity = pd.DataFrame({"supplier_id": ["a", "a", "b", "c"],
                             "activity_date": [DAY, DAY + timedelta(days=10), DAY + timedelta(days=31), DAY],
                             "event_name": ["login", "order", "order", "order"]})
    # a: active 10 days later (stays), then nothing after day 20 (churns); b: next activity 31 days
    # later, beyond 30 (churns); c: active only on the as-of day itself (churns).
    assert inactivity_labels(scores, activity, 30).tolist() == [False, True, True, True]
    assert inactivity_labels(scores, activity, 31).tolist() == [False, True, False, True]
    only_orders = label_churn(scores, Churn(kind="inactivity", horizon_days=30, events=["login"]), activity=activity)
    assert only_orders.tolist() == [True, True, True, True]


def _scored(health, levels=None):
    health = np.asarray(health, dtype=float)
    return pd.DataFrame({"supplier_id": [f"s{i}" for i in range(len(health))], "as_of_date": DAY,
                         "health_score": health, "scorecard_version": "t",
                         "risk_level": levels if levels is not None else
                         np.where(health < 40, "critical", np.where(health < 70, "at_risk", "healthy"))})


def test_backtest_reports_pr_auc_lift_and_brier_and_fails_loudly_without_churners():
    rng = np.random.default_rng(1)
    health = rng.uniform(0, 100, 1000)
    labels = rng.random(1000) < np.where(health < 30, 0.6, 0.05)
    result = backtest(_scored(health), labels=labels, churn_kind="inactivity", horizon_days=90)
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
    assert result.auc == pytest.approx(roc_auc_score(labels, -health))
    assert result.pr_auc == pytest.approx(average_precision_score(labels, -health))
    lowest = np.argsort(health)[:100]
    assert result.top_decile_lift == pytest.approx(labels[lowest].mean() / labels.mean())
    assert result.top_decile_lift > 2.5
    # Brier of the calibrated probability beats that of the constant churn rate.
    assert result.brier < brier_score_loss(labels, np.full(1000, labels.mean()))
    assert (result.churn_kind, result.horizon_days) == ("inactivity", 90)
    with pytest.raises(BacktestError, match="no churner among 1000 observations"):
        backtest(_scored(health), labels=np.zeros(1000, dtype=bool))


def test_diagnose_names_the_onboarding_profile_when_new_accounts_churn_most(tmp_path):
    # WS-168 as shipped has no onboarding profile (issue 13); a user's scorecard with one.
    ws168 = load_scorecard(write_onboarding_scorecard(tmp_path))
    rng = np.random.default_rng(7)
    rows, labels = [], []
    for i in range(600):
        onboarding = i < 150
        # New accounts log in a lot and adopt a little: the onboarding profile's lower adoption bar
        # scores them healthy, but they churn most (as on the churn simulator's data, issue 13).
        adoption = rng.uniform(0.3, 0.5) if onboarding else rng.uniform(0, 1)
        recency = int(rng.integers(0, 3)) if onboarding else int(rng.integers(0, 20))
        rows.append(account(f"s{i}", days_since_last_login=recency, adoption_breadth=adoption,
                            client_activity_rate=rng.uniform(0.7, 1) if onboarding else rng.uniform(0, 1),
                            form_completion_rate=None,
                            journey_completion_rate=None, lifecycle_stage="onboarding" if onboarding else "active"))
        risk = 0.45 if onboarding else 0.35 * (1 - adoption) ** 2 + 0.01 * recency
        labels.append(rng.random() < risk)
    frame, labels = pd.DataFrame(rows), np.array(labels)
    scores = score_suppliers(frame, ws168)
    result = backtest(scores, labels=labels)
    assert problems(result), (result.auc, result.churn_rate_by_level)
    found = diagnose(frame, ws168, labels, lambda e, c: score_suppliers(e, c)["health_score"])
    assert found and found[0].startswith("override 'onboarding' (onboarding profile: lifecycle_stage in [onboarding])")


def test_check_flags_an_override_that_scores_its_churners_higher_even_above_chance(tmp_path):
    """An onboarding profile (the one WS-168 carried before issue 13, now in a user's scorecard) on data
    like the churn simulator's: the scorecard still ranks churners above chance overall and its healthy
    level churns less than at_risk, but new accounts score higher and churn more; the
    scorecards_rank_churners warning names the profile."""
    ws168 = load_scorecard(write_onboarding_scorecard(tmp_path))
    rng = np.random.default_rng(11)
    rows, labels = [], []
    for i in range(2000):
        # 20 % new accounts (adoption 0.3-0.5, scored against the profile's lower bar), 64 % established
        # accounts that adopted a lot, 16 % that adopted little; all logged in within 3 days.
        onboarding, low = i < 400, i >= 1680
        adoption = rng.uniform(0.3, 0.5) if onboarding else rng.uniform(0, 0.3) if low else rng.uniform(0.5, 1)
        rows.append(account(f"s{i}", days_since_last_login=int(rng.integers(0, 3)), adoption_breadth=adoption,
                            client_activity_rate=rng.uniform(0, 1), form_completion_rate=None,
                            journey_completion_rate=None, lifecycle_stage="onboarding" if onboarding else "active"))
        labels.append(rng.random() < (0.08 if onboarding else 0.2 if low else 0.02))
    frame, labels = pd.DataFrame(rows), np.array(labels)

    def score(e, c):
        return score_suppliers(e, c)["health_score"]

    result = backtest(score_suppliers(frame, ws168), labels=labels)
    assert not problems(result), (result.auc, result.churn_rate_by_level)
    warning = misleading_warning(result, frame, ws168, labels, score)
    assert warning is not None and "override 'onboarding' scores its accounts higher" in warning
    assert "driven by: override 'onboarding'" in warning
    # Without the override (WS-168 as shipped) nothing is flagged.
    plain = load_scorecard("ws168")
    assert plain.model_dump(exclude={"version", "overrides"}) == ws168.model_dump(exclude={"version", "overrides"})
    assert misleading_warning(backtest(score_suppliers(frame, plain), labels=labels), frame, plain, labels, score) is None


# --- item 6: fitted scorecards ---------------------------------------------------------------------

from cs_pipeline.health.fit import fit_scorecard, scorecard_yaml  # noqa: E402
from cs_pipeline.health.scorecard import Scorecard  # noqa: E402


def test_fit_moves_weight_to_the_component_that_predicts_churn_and_sums_to_100(tmp_path):
    card = Scorecard.model_validate({
        "version": "toy-v1", "name": "toy", "churn": {"kind": "inactivity", "horizon_days": 30},
        "components": [
            {"name": "recency", "label": "R", "metric": "days_since_last_activity", "weight": 20, "phrase": "p",
             "rule": {"type": "step", "tiers": [{"lt": 7, "points": 20}, {"lt": 30, "points": 10}]}},
            {"name": "noise", "label": "N", "metric": "active_days_90d", "weight": 70, "phrase": "p",
             "rule": {"type": "percentile", "higher_is_better": True}},
            # Full points for every account (no failed invoice anywhere): it cannot rank anyone.
            {"name": "constant", "label": "C", "metric": "failed_invoices_30d", "weight": 10, "phrase": "p",
             "rule": {"type": "step", "tiers": [{"lt": 1, "points": 10}]}}]})
    def draw(rng):
        recency = int(rng.integers(0, 60))
        return ({"days_since_last_activity": recency, "active_days_90d": int(rng.integers(0, 40))},
                0.6 if recency >= 30 else 0.1)

    rows, labels = weekly_history(3, draw)
    result = fit_scorecard(rows, labels, card, "toy-v1-fit")
    weights = {c.name: c.weight for c in result.scorecard.components}
    assert sum(weights.values()) == pytest.approx(100) and weights["recency"] > 80
    assert weights["constant"] == 0
    # Step tiers are rescaled with their weight; the fit days come strictly before the held-out days.
    assert result.scorecard.components[0].rule.tiers[0].points == pytest.approx(weights["recency"], abs=0.01)
    assert result.fit_days[1] < result.test_days[0]
    assert result.new_auc > result.old_auc
    path = tmp_path / "fitted.yaml"
    path.write_text(scorecard_yaml(result.scorecard))
    assert load_scorecard(path) == result.scorecard


# --- tenure as a signal (issue 13 follow-up) -------------------------------------------------------

TENURE = {"name": "tenure", "label": "Tenure", "metric": "tenure_days", "weight": 20, "phrase": "{metric} days old",
          "unit": "days", "rule": {"type": "linear", "lower": 0, "upper": 365}}


def test_a_tenure_component_gives_older_accounts_more_points_and_missing_tenure_is_excluded():
    card = Scorecard.model_validate({
        "version": "tenure-v1", "name": "t", "components": [
            {"name": "recency", "label": "R", "metric": "days_since_last_activity", "weight": 80, "phrase": "p",
             "rule": {"type": "step", "tiers": [{"lt": 7, "points": 80}], "otherwise": 0}},
            TENURE]})
    frame = pd.DataFrame([account(s, days_since_last_activity=1, tenure_days=t)
                          for s, t in (("new", 10), ("half", 182.5), ("old", 400), ("unknown", None))])
    out = score_suppliers(frame, card).set_index("supplier_id")
    assert out["tenure_points"].round(2).tolist()[:3] == [0.55, 10.0, 20.0]  # 20 x clip(days / 365, 0, 1)
    assert out.loc["new", "health_score"] < out.loc["half", "health_score"] < out.loc["old", "health_score"]
    assert np.isnan(out.loc["unknown", "tenure_points"]) and "tenure" in out.loc["unknown", "missing_components"]
    assert out.loc["unknown", "health_score"] == 100  # 80 of the 80 present points
    # A percentile rule (higher is better): mid-ranks 1/6, 3/6, 5/6 of 20 among the three with a tenure.
    ranked = Scorecard.model_validate(card.model_dump() | {"components": [
        card.components[0].model_dump(), TENURE | {"rule": {"type": "percentile", "by": []}}]})
    out = score_suppliers(frame, ranked).set_index("supplier_id")
    assert out["tenure_points"].round(2).tolist()[:3] == [3.33, 10.0, 16.67]


def test_fit_weights_a_tenure_component_when_new_accounts_churn_most():
    """On history where churn follows account age (as on RavenStack and the churn simulator), the fit
    moves weight to the tenure component of the source scorecard and beats it held out in time."""
    card = Scorecard.model_validate({
        "version": "tenure-v1", "name": "t", "churn": {"kind": "cancellation", "horizon_days": 30},
        "components": [
            {"name": "recency", "label": "R", "metric": "days_since_last_activity", "weight": 80, "phrase": "p",
             "rule": {"type": "linear", "lower": 60, "upper": 0}},
            TENURE]})
    def draw(rng):
        tenure = int(rng.integers(1, 720))
        return ({"tenure_days": tenure, "days_since_last_activity": int(rng.integers(0, 60))},
                0.4 if tenure < 90 else 0.05)

    rows, labels = weekly_history(5, draw)
    result = fit_scorecard(rows, labels, card, "tenure-v1-fit")
    weights = {c.name: c.weight for c in result.scorecard.components}
    assert sum(weights.values()) == pytest.approx(100) and weights["tenure"] > 50
    assert result.new_auc > result.old_auc and result.new_auc > 0.7
