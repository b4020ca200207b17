"""The health assets materialised through Dagster on generated data: scores, checks, milestones,
re-runs, and a backtest whose AUC shows the score predicts churn."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from cs_pipeline.definitions import build_definitions
from cs_pipeline.health.scorecard import SCORECARD_DIR, load_scorecard
from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.runtime.runner import run_job_over_range
from tests.helpers import reset_warehouse, write_onboarding_scorecard

pytestmark = pytest.mark.slow

START, END = date(2025, 1, 1), date(2025, 5, 30)


@pytest.fixture(scope="module")
def pipeline(settings, warehouse, tmp_path_factory):
    with warehouse.connect() as conn:
        reset_warehouse(conn)
        conn.execute("DROP TABLE IF EXISTS marts.customer_health, marts.success_milestones, marts.health_score_backtest")
        conn.commit()
    landing = tmp_path_factory.mktemp("health_landing")
    generate(GeneratorConfig(suppliers=250, days=(END - START).days + 1, start=START, seed=3, out=landing))
    local = settings.model_copy(update={"landing_dir": landing})
    defs = build_definitions(local)
    instance = dg.DagsterInstance.ephemeral()
    summaries = run_job_over_range(defs, "daily_customer_success", START, END, instance, days_per_run=75)
    assert all(s.success for s in summaries)
    return defs, instance, landing


def test_every_active_supplier_is_scored_every_day(pipeline, conn):
    counts = conn.execute(
        "SELECT e.as_of_date, count(*), count(h.supplier_id), count(*) FILTER (WHERE h.scored) "
        "FROM marts.supplier_engagement_daily e LEFT JOIN marts.customer_health h USING (supplier_id, as_of_date) "
        "GROUP BY 1 ORDER BY 1").fetchall()
    assert len(counts) == (END - START).days + 1
    assert all(total == matched for _, total, matched, _ in counts)
    levels = dict(conn.execute("SELECT risk_level, count(*) FROM marts.customer_health WHERE as_of_date = %s "
                               "GROUP BY 1", (END,)).fetchall())
    assert set(levels) >= {"healthy", "at_risk", "critical"}
    bad = conn.execute("SELECT count(*) FROM marts.customer_health WHERE scored AND (health_score < 0 OR "
                       "health_score > 100 OR (health_score < 40) <> (risk_level = 'critical'))").fetchone()[0]
    assert bad == 0
    trend = conn.execute("SELECT count(*) FILTER (WHERE trend IS NOT NULL), count(*) FROM marts.customer_health "
                         "WHERE as_of_date = %s", (END,)).fetchone()
    assert trend[0] > 0.8 * trend[1]


def test_seasonal_index_from_the_database_equals_the_index_from_the_rows(pipeline, conn):
    """Issue 18: scoring aggregates the seasonal history in PostgreSQL instead of reading every row."""
    from cs_pipeline.health.scoring import seasonal_index, seasonal_index_from_sums
    from cs_pipeline.health.store import read_engagement, read_seasonal_sums

    card = load_scorecard(SCORECARD_DIR / "ws168.yaml")
    metrics = card.seasonal_metrics
    assert metrics
    rows = read_engagement(conn, START, END, ["vendor_category", "as_of_date", *metrics])
    sums = read_seasonal_sums(conn, START, END, metrics)
    assert len(sums) < len(rows) / 100
    from_rows = seasonal_index(rows, metrics, card.seasonality).sort_values(["vendor_category", "month"])
    from_sums = seasonal_index_from_sums(sums, metrics, card.seasonality).sort_values(
        ["vendor_category", "month"])
    assert len(from_rows) > 10
    pd.testing.assert_frame_equal(from_rows.reset_index(drop=True), from_sums.reset_index(drop=True),
                                  check_dtype=False, rtol=1e-9)


def test_the_scenario_supplier_is_at_risk_with_a_login_driver(pipeline, conn):
    row = conn.execute("SELECT health_score, risk_level, drivers, components FROM marts.customer_health "
                       "WHERE supplier_id = 'sup_000001' AND as_of_date = %s", (END,)).fetchone()
    assert row is not None and row[1] in ("at_risk", "critical")
    assert "no login for" in row[2]
    assert row[3]["login_recency"]["points"] <= 10


def test_asset_checks_pass_and_rerun_replaces_only_its_day(pipeline, conn):
    defs, instance, _ = pipeline
    before = conn.execute("SELECT count(*), sum(health_score) FROM marts.customer_health WHERE as_of_date <> %s",
                          (END,)).fetchone()
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key=END.isoformat(), instance=instance,
                                    asset_selection=[dg.AssetKey(["marts", "customer_health"]),
                                                     dg.AssetKey(["marts", "success_milestones"])])
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"scores_in_range": True, "every_active_supplier_scored": True,
                      "risk_level_matches_thresholds": True, "gx_customer_health": True}
    after = conn.execute("SELECT count(*), sum(health_score) FROM marts.customer_health WHERE as_of_date <> %s",
                         (END,)).fetchone()
    assert before == after
    dup = conn.execute("SELECT count(*) FROM (SELECT 1 FROM marts.customer_health GROUP BY supplier_id, as_of_date "
                       "HAVING count(*) > 1) d").fetchone()[0]
    assert dup == 0


def test_milestones_are_kept_and_consistent(pipeline, conn):
    rows = pd.DataFrame(conn.execute("SELECT supplier_id, milestone_type, achieved_at, celebrated "
                                     "FROM marts.success_milestones").fetchall(),
                        columns=["supplier_id", "milestone_type", "achieved_at", "celebrated"])
    assert len(rows) > 250 and not rows["celebrated"].any()
    by = rows.pivot(index="supplier_id", columns="milestone_type", values="achieved_at")
    both = by.dropna(subset=["first_form_sent", "first_form_completed"])
    assert (both["first_form_completed"] >= both["first_form_sent"]).all()
    # Re-evaluating an early window (a backfill out of order) never loses or delays achievements.
    defs, instance, _ = pipeline
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(partition_key="2025-02-01", instance=instance,
                                  asset_selection=[dg.AssetKey(["marts", "success_milestones"])]).success
    again = pd.DataFrame(conn.execute("SELECT supplier_id, milestone_type, achieved_at FROM marts.success_milestones")
                         .fetchall(), columns=["supplier_id", "milestone_type", "achieved_at"])
    merged = rows.merge(again, on=["supplier_id", "milestone_type"], suffixes=("", "_again"))
    assert len(again) == len(rows) and (merged["achieved_at_again"] <= merged["achieved_at"]).all()


def test_backtest_shows_the_score_predicts_churn(pipeline, conn):
    defs, instance, _ = pipeline
    job = defs.resolve_job_def("health_score_backtest_job")
    result = job.execute_in_process(instance=instance)
    assert result.success
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT scorecard_version, auc, observations, churners, churn_rate_by_level FROM marts.health_score_backtest "
        "WHERE kind = 'scorecard'")}
    assert set(rows) == {"ws168-v2", "ws133-v1", "purchase-v1"}  # every shipped scorecard
    auc, observations, churners, by_level = rows["ws168-v2"]
    assert observations > 1000 and churners > 10
    assert float(auc) > 0.7
    assert by_level["critical"] > by_level["healthy"]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["backtest_has_churners"].passed
    # WS-168 as DOMAIN.md writes it (issue 13: no onboarding profile, never-logged-in recency 0 points)
    # is not flagged on the generator's history, where new accounts churn most.
    text = checks["scorecards_rank_churners"].metadata["warnings"].value
    assert "ws168-v2" not in text and "ws133-v1" not in text


def test_backtest_check_names_an_onboarding_profile_that_scores_churners_higher(pipeline, settings, tmp_path):
    """The generator's new accounts churn most; a configured scorecard with the onboarding profile WS-168
    carried before issue 13 (lower adoption bar in the first 30 days) scores them highest. The blocking
    WARN check says so, naming the override; the shipped scorecards have no override to blame."""
    _, instance, landing = pipeline
    path = write_onboarding_scorecard(tmp_path, version="onboarding-v1")
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing, "scorecard": str(path)}))
    result = defs.resolve_job_def("health_score_backtest_job").execute_in_process(instance=instance)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    warn = checks["scorecards_rank_churners"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    text = warn.metadata["warnings"].value
    assert "onboarding-v1 override 'onboarding' scores its accounts higher" in text
    assert "driven by: override 'onboarding'" in text
    assert "ws168-v2" not in text and "ws133-v1" not in text


def test_backtest_check_warns_about_a_scorecard_that_ranks_churners_below_chance(pipeline, settings, tmp_path):
    """A configured scorecard whose login recency rewards silence (points grow with days since the last
    login) ranks churners below chance on the same history: the blocking WARN check fails and names the
    component, and the run itself still succeeds."""
    _, instance, landing = pipeline
    card = yaml.safe_load(Path(SCORECARD_DIR, "ws168.yaml").read_text())
    card["version"] = "inverted-v1"
    card["components"][0]["rule"] = {"type": "step", "tiers": [{"lt": 3, "points": 0}, {"lt": 7, "points": 10},
                                                               {"lt": 14, "points": 20}], "otherwise": 30}
    card["components"][1]["weight"] = 0
    card["overrides"] = []
    path = tmp_path / "inverted.yaml"
    path.write_text(yaml.safe_dump(card))
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing, "scorecard": str(path)}))
    result = defs.resolve_job_def("health_score_backtest_job").execute_in_process(instance=instance)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["backtest_has_churners"].passed
    warn = checks["scorecards_rank_churners"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    text = warn.metadata["warnings"].value
    assert "inverted-v1 ranks churners below chance" in text and "component 'login_recency'" in text
    assert "ws133-v1" not in text


def test_scorecard_fit_asset_writes_a_fitted_version_like_the_cli(pipeline):
    """The scorecard_fit_job runs the same fit as `cs-pipeline scorecard fit` and writes a loadable
    scorecard whose weights sum to 100, with the held-out ROC-AUC of both versions as metadata."""
    defs, instance, _ = pipeline
    result = defs.resolve_job_def("scorecard_fit_job").execute_in_process(
        instance=instance, run_config={"ops": {"scorecards__fitted": {"config": {"from_scorecard": "ws133",
                                                                                  "as_of": END.isoformat()}}}})
    assert result.success
    metadata = result.asset_materializations_for_node("scorecards__fitted")[0].metadata
    card = load_scorecard(metadata["path"].value)
    assert card.version == "ws133-v1-fit-20250530" == metadata["version"].value
    assert abs(sum(c.weight for c in card.components) - 100) < 1e-6
    assert metadata["weights"].value == {c.name: c.weight for c in card.components}
    auc = metadata["held_out_auc"].value
    assert set(auc) == {"ws133-v1", card.version} and all(0.5 < v <= 1 for v in auc.values())


# --- issue 26: the churn model, trained and scoring through Dagster on the same history ------------------


def test_churn_model_refuses_in_one_line_as_a_user_sees_it(pipeline):
    """Three weekly as-of days whose 30-day horizon ended: the CLI prints one line and exits 1, the asset fails
    with the same line; no model is stored."""
    from typer.testing import CliRunner

    from cs_pipeline.cli import app

    early = (START + pd.Timedelta(days=50)).isoformat()
    out = CliRunner().invoke(app, ["model", "train", "--as-of", early, "--churn", "cancellation:30"])
    assert out.exit_code == 1, out.output
    line = "churn model refused: 3 weekly as-of day(s) whose 30-day horizon ended by 2025-02-20 (at least 4 needed)"
    assert line in out.output and len(out.output.strip().splitlines()) == 1
    defs, instance, _ = pipeline
    result = defs.resolve_job_def("churn_model_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"models__churn_model": {"config": {"as_of": early, "churn": "cancellation:30"}}}})
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert line in failure.step_failure_data.error.message
    assert CliRunner().invoke(app, ["model", "list"]).output.startswith("no churn model yet")


def test_churn_model_asset_trains_compares_and_scores(pipeline, conn, settings):
    defs, instance, _ = pipeline
    before = conn.execute("SELECT sum(health_score), count(*) FILTER (WHERE risk_level = 'critical') "
                          "FROM marts.customer_health WHERE as_of_date = %s", (END,)).fetchone()
    # Trained on history up to the day before END: a model is known from the day after its as-of day (issue 28).
    result = defs.resolve_job_def("churn_model_job").execute_in_process(
        instance=instance, run_config={"ops": {"models__churn_model": {"config": {
            "as_of": (END - pd.Timedelta(days=1)).isoformat()}}}})
    assert result.success
    metadata = result.asset_materializations_for_node("models__churn_model")[0].metadata
    version = metadata["version"].value
    table = metadata["comparison"].value
    assert f"churn model ({metadata['algorithm'].value}; deployed: {metadata['settings'].value})" in table
    assert "scorecard ws168-v2" in table and "recency" in table
    assert metadata["settings"].value.endswith(" rounds" if metadata["algorithm"].value == "gbm" else " inputs")
    row = conn.execute("SELECT algorithm, val_auc, val_auc_ci_low, val_auc_ci_high, scorecard_auc, recency_auc, brier, "
                       "top_decile_lift, churners, training_rows, churn_kind, horizon_days FROM ops.churn_models "
                       "WHERE version = %s", (version,)).fetchone()
    algorithm, auc, low, high, card_auc, recency_auc, brier, lift, churners, rows, kind, horizon = row
    assert algorithm in ("logistic", "gbm") and (kind, horizon) == ("cancellation", 30)
    assert low <= auc <= high and card_auc is not None and recency_auc is not None
    assert auc > 0.7 and 0 < brier < 0.25 and lift > 1 and churners >= 30 and rows > churners
    assert (settings.home / "models" / version / "model.joblib").is_file()
    shown = conn.execute("SELECT auc, auc_ci_low, auc_ci_high FROM marts.health_score_backtest "
                         "WHERE kind = 'model' AND scorecard_version = %s", (version,)).fetchone()
    assert shown == (auc, low, high)
    # customer_health scores with it: probability and version on every scored row, reasons in words in the
    # drivers; the scorecard's health score and risk levels unchanged.
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(partition_key=END.isoformat(), instance=instance,
                                  asset_selection=[dg.AssetKey(["marts", "customer_health"])]).success
    after = conn.execute("SELECT sum(health_score), count(*) FILTER (WHERE risk_level = 'critical') "
                         "FROM marts.customer_health WHERE as_of_date = %s", (END,)).fetchone()
    assert after == before
    scored = pd.DataFrame(conn.execute("SELECT churn_probability::float8, churn_model_version, drivers, risk_level "
                                       "FROM marts.customer_health WHERE as_of_date = %s", (END,)).fetchall(),
                          columns=["p", "version", "drivers", "risk_level"])
    assert scored["p"].between(0, 1).all() and (scored["version"] == version).all()
    reasons = scored.loc[scored["drivers"].str.contains("churn model: ", regex=False), "drivers"]
    assert len(reasons) > 0 and reasons.str.contains(r"\+\d+ % churn risk").all()
    # Critical accounts have a higher predicted churn probability than healthy ones on average.
    by_level = scored.groupby("risk_level")["p"].mean()
    assert by_level["critical"] > by_level["healthy"]
    from typer.testing import CliRunner

    from cs_pipeline.cli import app

    listed = CliRunner().invoke(app, ["model", "list"]).output
    assert version in listed and f"{metadata['algorithm'].value} ({metadata['settings'].value})" in listed


def test_churn_probability_of_a_day_ignores_later_data(pipeline, conn, settings):
    """Deleting the feature days and changing the engagement rows after D leaves D's features and
    probability as they were (in a transaction, rolled back); a change on D itself does move them."""
    from cs_pipeline.health.churn_scoring import score_churn
    from cs_pipeline.health.churn_service import active_model, features_for
    from cs_pipeline.health.store import read_engagement

    model = active_model(conn, settings)
    day = START + pd.Timedelta(days=80)
    rows = read_engagement(conn, day, day)
    before, features = score_churn(conn, model, rows), features_for(conn, rows, model.columns, model.catalogue)
    conn.execute("DELETE FROM intermediate.int_supplier_feature_days WHERE activity_date > %s", (day,))
    conn.execute("UPDATE marts.supplier_engagement_daily SET events_30d = events_30d * 10 + 5 WHERE as_of_date > %s",
                 (day,))
    conn.execute("DELETE FROM marts.dim_suppliers WHERE cancelled_date > %s", (day,))
    pd.testing.assert_frame_equal(score_churn(conn, model, read_engagement(conn, day, day)), before)
    pd.testing.assert_frame_equal(features_for(conn, read_engagement(conn, day, day), model.columns, model.catalogue),
                                  features)
    conn.execute("UPDATE intermediate.int_supplier_feature_days SET uses = uses * 50 + 50 WHERE activity_date = %s",
                 (day,))
    assert not features_for(conn, read_engagement(conn, day, day), model.columns, model.catalogue).equals(features)
    conn.rollback()


def test_churn_scoring_takes_what_the_warehouse_already_holds(pipeline, conn, settings):
    """What a daily run no longer recomputes gives what recomputing gives (issue 26 item 7, scoring cost):
    the per-feature windows of the day marts.fct_feature_adoption is as of come from that mart (they stay
    when the feature days are deleted) and equal the windows aggregated from the feature days; training
    stores the model's probabilities of the 7 days up to its as-of day (ops.churn_model_scores), equal to
    scoring those rows again, and churn_probability_7d_ago takes them as given (a planted value shows),
    the same as recomputed without them."""
    from datetime import timedelta

    from cs_pipeline.health.churn_scoring import ADOPTION, read_feature_windows, score_churn
    from cs_pipeline.health.churn_service import catalogue_features, ensure_churn_tables, load_model
    from cs_pipeline.health.store import read_engagement

    defs, instance, _ = pipeline
    day = conn.execute("SELECT as_of_date FROM marts.fct_feature_adoption LIMIT 1").fetchone()[0]
    rows, catalogue = read_engagement(conn, day, day), catalogue_features(conn)
    from_mart = read_feature_windows(conn, rows, catalogue, adoption=ADOPTION)
    pd.testing.assert_frame_equal(from_mart, read_feature_windows(conn, rows, catalogue), check_exact=True)
    assert len(rows) > 100 and from_mart.to_numpy().sum() > 0
    conn.execute("DELETE FROM intermediate.int_supplier_feature_days WHERE activity_date <= %s", (day,))
    pd.testing.assert_frame_equal(read_feature_windows(conn, rows, catalogue, adoption=ADOPTION), from_mart)
    assert read_feature_windows(conn, rows, catalogue).to_numpy().sum() == 0
    conn.rollback()

    as_of = END - timedelta(days=1)
    # rows of a model no longer among the newest eight (here: none at all) are dropped by the next training
    ensure_churn_tables(conn)
    conn.execute("INSERT INTO ops.churn_model_scores VALUES ('gone', %s, 'sup_000001', 0.5)", (as_of,))
    conn.commit()
    result = defs.resolve_job_def("churn_model_job").execute_in_process(
        instance=instance, run_config={"ops": {"models__churn_model": {"config": {"as_of": as_of.isoformat()}}}})
    assert result.success
    version = result.asset_materializations_for_node("models__churn_model")[0].metadata["version"].value
    model = load_model(settings, version)
    assert conn.execute("SELECT count(*) FROM ops.churn_model_scores WHERE version = 'gone'").fetchone()[0] == 0
    stored = pd.DataFrame(conn.execute(
        "SELECT supplier_id, as_of_date, churn_probability::float8 FROM ops.churn_model_scores WHERE version = %s "
        "ORDER BY as_of_date, supplier_id", (version,)).fetchall(), columns=["supplier_id", "as_of_date", "p"])
    week = read_engagement(conn, as_of - timedelta(days=6), as_of)
    assert sorted(set(stored["as_of_date"])) == [as_of - timedelta(days=k) for k in range(6, -1, -1)]
    assert stored[["supplier_id", "as_of_date"]].equals(week[["supplier_id", "as_of_date"]])
    assert stored["p"].to_numpy().tolist() == score_churn(conn, model, week)["churn_probability"].tolist()
    scored = read_engagement(conn, END, END)
    given = score_churn(conn, model, scored, week_ago=True)
    assert given["churn_probability_7d_ago"].notna().mean() > 0.9
    conn.execute("UPDATE ops.churn_model_scores SET churn_probability = 1 - churn_probability WHERE version = %s",
                 (version,))
    planted = score_churn(conn, model, scored, week_ago=True)["churn_probability_7d_ago"]
    assert planted.to_numpy() == pytest.approx(1 - given["churn_probability_7d_ago"].to_numpy(), nan_ok=True)
    conn.execute("DELETE FROM ops.churn_model_scores WHERE version = %s", (version,))
    pd.testing.assert_frame_equal(score_churn(conn, model, scored, week_ago=True), given, check_exact=True)
    conn.rollback()
    # A day customer_health scores again (its data may have changed) loses its stored probabilities: they are
    # recomputed, not taken from before the change.
    rescored = as_of - timedelta(days=3)
    _rescore(defs, instance, conn, rescored)
    left = dict(conn.execute("SELECT as_of_date, count(*) FROM ops.churn_model_scores WHERE version = %s "
                             "GROUP BY 1", (version,)).fetchall())
    assert rescored not in left and len(left) == 6


# --- issue 28: a past day's churn-risk score and churn probability use only what was known by that day ------


def _rescore(defs, instance, conn, day: date) -> pd.DataFrame:
    """customer_health re-run for ``day``; its rows (supplier order)."""
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                  asset_selection=[dg.AssetKey(["marts", "customer_health"])]).success
    rows = pd.DataFrame(conn.execute(
        "SELECT supplier_id, health_score::float8, churn_risk_score::float8, churn_probability::float8, "
        "churn_model_version, drivers FROM marts.customer_health WHERE as_of_date = %s ORDER BY 1", (day,)).fetchall(),
        columns=["supplier_id", "health", "risk", "p", "version", "drivers"])
    conn.commit()
    return rows


def test_churn_risk_of_a_past_day_uses_only_a_backtest_known_by_it(pipeline, conn):
    """A backtest over as-of days up to L with a 30-day horizon is known from L + 31 on: a day before
    that keeps the fallback 100 - health, however many newer backtests exist; a day after it uses its
    calibration (the newest known)."""
    from datetime import timedelta

    from cs_pipeline.health.backtest import calibrated_churn_risk

    defs, instance, _ = pipeline
    day = END - timedelta(days=5)
    before = _rescore(defs, instance, conn, day)
    assert before["risk"].to_numpy() == pytest.approx(100 - before["health"].to_numpy(), nan_ok=True)
    assert defs.resolve_job_def("health_score_backtest_job").execute_in_process(instance=instance).success
    last_day, calibration = conn.execute(
        "SELECT last_day, calibration FROM marts.health_score_backtest WHERE kind = 'scorecard' AND "
        "scorecard_version = 'ws168-v2' ORDER BY evaluated_at DESC LIMIT 1").fetchone()
    assert calibration and last_day + timedelta(days=30) >= day  # the newest backtest is not known by the day
    pd.testing.assert_frame_equal(_rescore(defs, instance, conn, day), before)
    # The same backtest as run 30 days earlier (over as-of days up to day - 31) is known by the day.
    conn.execute("INSERT INTO marts.health_score_backtest (scorecard_version, evaluated_at, first_day, last_day, "
                 "horizon_days, observations, churners, churn_rate_by_level, calibration) "
                 "SELECT scorecard_version, evaluated_at - interval '1 second', first_day, %s, horizon_days, observations, "
                 "churners, churn_rate_by_level, calibration FROM marts.health_score_backtest WHERE kind = 'scorecard' "
                 "AND scorecard_version = 'ws168-v2' ORDER BY evaluated_at DESC LIMIT 1", (day - timedelta(days=31),))
    conn.commit()
    try:
        known = _rescore(defs, instance, conn, day)
        expected = calibrated_churn_risk(known["health"].to_numpy(), calibration)
        assert known["risk"].to_numpy() == pytest.approx(expected, nan_ok=True)
        assert (known["risk"] != before["risk"]).any()
    finally:
        conn.execute("DELETE FROM marts.health_score_backtest WHERE last_day = %s", (day - timedelta(days=31),))
        conn.commit()
    pd.testing.assert_frame_equal(_rescore(defs, instance, conn, day), before)


def test_a_past_days_churn_probability_keeps_the_model_trained_as_of_it(pipeline, conn, settings):
    """Day D is scored by the model with the latest training as-of day before D: training a later model
    and re-running D leaves D's probabilities, version and reasons as they were; the day after the later
    model's as-of day takes the later model, its as-of day itself not."""
    from datetime import timedelta

    defs, instance, _ = pipeline
    early, day, late = (START + timedelta(days=n) for n in (105, 115, 125))

    def train(as_of: date) -> str:
        result = defs.resolve_job_def("churn_model_job").execute_in_process(
            instance=instance, run_config={"ops": {"models__churn_model": {"config": {
                "as_of": as_of.isoformat(), "churn": "cancellation:30"}}}})
        assert result.success
        return result.asset_materializations_for_node("models__churn_model")[0].metadata["version"].value

    first = train(early)
    before = _rescore(defs, instance, conn, day)
    assert (before["version"] == first).all() and before["p"].between(0, 1).all()
    assert before["drivers"].str.contains("churn model: ", regex=False).any()
    second = train(late)
    pd.testing.assert_frame_equal(_rescore(defs, instance, conn, day), before)
    assert (_rescore(defs, instance, conn, late + timedelta(days=1))["version"] == second).all()
    assert (_rescore(defs, instance, conn, late)["version"] == first).all()
    assert _rescore(defs, instance, conn, early)["version"].isna().all()  # none trained before it
    # The playbook's rise_7d: the day after the retrain stores, beside today's probability, the *same* (new)
    # model's probability for each supplier's row 7 days earlier, a day the older model scored.
    from cs_pipeline.health.churn_scoring import score_churn
    from cs_pipeline.health.churn_service import load_model
    from cs_pipeline.health.store import read_engagement

    after = late + timedelta(days=1)
    _rescore(defs, instance, conn, after)
    stored = pd.DataFrame(conn.execute(
        "SELECT supplier_id, churn_probability_7d_ago::float8 FROM marts.customer_health WHERE as_of_date = %s "
        "AND churn_model_version = %s", (after, second)).fetchall(), columns=["supplier_id", "p_7d_ago"])
    week_ago = read_engagement(conn, after - timedelta(days=7), after - timedelta(days=7))
    expected = score_churn(conn, load_model(settings, second), week_ago)["churn_probability"]
    expected = pd.Series(expected.to_numpy(), index=week_ago["supplier_id"].astype(str))
    assert len(stored) > 0 and stored["p_7d_ago"].notna().sum() >= 0.9 * len(stored)
    assert stored["p_7d_ago"].to_numpy() == pytest.approx(
        expected.reindex(stored["supplier_id"]).to_numpy(), abs=1e-4, nan_ok=True)
