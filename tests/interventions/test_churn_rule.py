"""The playbook acting on the churn model (issue 26 item 6): the ``churn_probability`` condition (at least,
risen in 7 days as the same model sees it, null never matches) and the shipped ``churn_risk_rising``
rule, evaluated only when a churn model scored the day. Pure logic first, then through Dagster
(the daily pipeline, then ``intervention_job``) on the real PostgreSQL warehouse."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from cs_pipeline.definitions import build_definitions
from cs_pipeline.health.churn_service import ensure_churn_tables
from cs_pipeline.interventions.churn_rule import rules_disabled
from cs_pipeline.interventions.defs import intervention_job
from cs_pipeline.interventions.delivery import EmailResource, ensure_intervention_tables
from cs_pipeline.interventions.planning import condition_mask, newly_matching
from cs_pipeline.interventions.playbook import (
    PLAYBOOK_YAML,
    PlaybookError,
    load_playbook,
)
from cs_pipeline.runtime.runner import run_job_over_range
from tests.helpers import reset_interventions
from tests.interventions.test_interventions import facts, scenario_landing

PLAYBOOK = load_playbook()
RULE = PLAYBOOK.rule("churn_risk_rising")
DAY = date(2025, 6, 9)
WEEK_AGO = DAY - timedelta(days=7)


# --- pure logic ----------------------------------------------------------------------------------


def churn_facts(sid: str, p: float | None, before: float | None, day: date = DAY) -> dict:
    return facts(supplier_id=sid, as_of_date=day, churn_probability=np.nan if p is None else p,
                 churn_model_version=None if p is None else "m1",
                 churn_probability_7d_ago=np.nan if before is None else before)


def test_shipped_rule_requires_a_model_and_reads_the_probability():
    assert RULE.requires == "churn_model"
    assert RULE.condition.churn_probability.at_least == 0.3 and RULE.condition.churn_probability.rise_7d == 0.1
    assert not RULE.condition.every_day  # a transition: once per rise, not every day of it


def test_condition_at_least_and_rise_null_never_matches():
    rows = pd.DataFrame([
        churn_facts("rose", 0.42, 0.30),
        churn_facts("edge", 0.35, 0.25),       # 0.35 - 0.25 is 0.0999999... in floating point: still a rise of 0.1
        churn_facts("low", 0.29, 0.05),        # rose, but below at_least
        churn_facts("flat", 0.60, 0.55),       # high, but not risen enough
        churn_facts("no_before", 0.60, None),  # nothing comparable 7 days earlier
        churn_facts("no_model", None, None),
    ])
    matched = set(rows.loc[condition_mask(rows, RULE.condition), "supplier_id"])
    assert matched == {"rose", "edge"}
    at_least_only = RULE.condition.model_copy(update={"churn_probability": RULE.condition.churn_probability
                                                      .model_copy(update={"rise_7d": None})})
    assert set(rows.loc[condition_mask(rows, at_least_only), "supplier_id"]) == {"rose", "edge", "flat", "no_before"}


def test_rule_fires_on_the_transition_only():
    previous = pd.DataFrame([churn_facts("new", 0.33, 0.31, DAY - timedelta(days=1)),
                             churn_facts("old", 0.40, 0.25, DAY - timedelta(days=1))])
    today = pd.DataFrame([churn_facts("new", 0.45, 0.31), churn_facts("old", 0.45, 0.30)])
    assert newly_matching(RULE, today, previous) == ["new"]  # "old" already matched the day before


def test_rules_disabled_without_a_model():
    assert rules_disabled(PLAYBOOK, "m1") == {}
    disabled = rules_disabled(PLAYBOOK, None, "no churn model trained")
    assert set(disabled) == {"churn_risk_rising"} and "no churn model trained" in disabled["churn_risk_rising"]


def test_churn_condition_without_requires_is_refused(tmp_path):
    data = yaml.safe_load(PLAYBOOK_YAML.read_text())
    for rule in data["rules"]:
        if rule["name"] == "churn_risk_rising":
            del rule["requires"]
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlaybookError, match="requires: churn_model"):
        load_playbook(path)
    data["rules"][0]["condition"]["churn_probability"] = {"at_least": 1.5}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlaybookError, match="at_least"):
        load_playbook(path)


# --- through Dagster, on the warehouse -----------------------------------------------------------


@pytest.fixture(scope="module")
def scored(settings, warehouse, tmp_path_factory):
    """Nine days of the worked scenario through the daily job: customer_health scored, without a model."""
    with warehouse.connect() as conn:
        reset_interventions(conn)
    first = DAY - timedelta(days=8)
    landing = tmp_path_factory.mktemp("churn_rule_landing")
    scenario_landing(landing, first, 9)
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing}))
    instance = dg.DagsterInstance.ephemeral()
    assert all(s.success for s in run_job_over_range(defs, "daily_customer_success", first, DAY, instance, 9))
    yield instance
    with warehouse.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS ops.churn_models")
        conn.commit()


def plant(conn, model: str | None, probabilities: dict[date, tuple]) -> None:
    """Clear earlier plans and probabilities; register ``model`` in ops.churn_models (None: no model); set
    s_busy0's churn_probability, model version and (optional third value) churn_probability_7d_ago per day."""
    ensure_churn_tables(conn)
    ensure_intervention_tables(conn)
    conn.execute("DELETE FROM ops.churn_models")
    conn.execute("DELETE FROM ops.support_interactions")
    conn.execute("DELETE FROM ops.in_app_notifications")
    conn.execute("DELETE FROM ops.interventions")
    conn.execute("UPDATE marts.customer_health SET churn_probability = NULL, churn_model_version = NULL, "
                 "churn_probability_7d_ago = NULL")
    if model is not None:
        conn.execute("INSERT INTO ops.churn_models (version, trained_at, training_as_of, churn_kind, horizon_days, "
                     "algorithm, features, training_rows, churners, metrics) "
                     "VALUES (%s, now(), %s, 'cancellation', 30, 'logistic', '[]', 100, 30, '{}')", (model, WEEK_AGO))
    for day, (p, version, *before) in probabilities.items():
        conn.execute("UPDATE marts.customer_health SET churn_probability = %s, churn_model_version = %s, "
                     "churn_probability_7d_ago = %s WHERE supplier_id = 's_busy0' AND as_of_date = %s",
                     (p, version, before[0] if before else None, day))
    conn.commit()


def run_day(instance, warehouse, tmp_path) -> dict:
    """Run intervention_job for DAY as the sensor would launch it; the op's output metadata."""
    config = {"ops": {"deliver_interventions": {"config": {"as_of_date": DAY.isoformat()}}}}
    result = intervention_job.execute_in_process(run_config=config, instance=instance, resources={
        "warehouse": warehouse, "email": EmailResource(outbox_dir=str(tmp_path / "outbox"))})
    assert result.success
    output = next(e for e in result.all_node_events if e.is_successful_output)
    return {k: v.value for k, v in output.step_output_data.metadata.items()}


def churn_rows(conn) -> list[tuple]:
    return conn.execute("SELECT supplier_id, channel, status FROM ops.interventions WHERE rule = 'churn_risk_rising' "
                        "ORDER BY 1").fetchall()


RISE = {WEEK_AGO: (0.15, "m1"), DAY - timedelta(days=1): (0.24, "m1", 0.14), DAY: (0.41, "m1", 0.15)}


def test_rule_fires_on_a_planted_rise_with_a_model(scored, warehouse, conn, tmp_path):
    plant(conn, "m1", RISE)
    metadata = run_day(scored, warehouse, tmp_path)
    assert churn_rows(conn) == [("s_busy0", "call", "sent")]
    task = conn.execute("SELECT interaction_type, scheduled_for FROM ops.support_interactions "
                        "WHERE supplier_id = 's_busy0'").fetchall()
    assert task == [("check_in", date(2025, 6, 11))]  # delay 1 day -> Tue 06-10 -> next business day
    assert metadata["rules_not_evaluated"] == {}


def test_rule_does_not_fire_without_a_model(scored, warehouse, conn, tmp_path):
    # The same planted probabilities, but no model in ops.churn_models: the rule is not evaluated, and says why.
    plant(conn, None, RISE)
    metadata = run_day(scored, warehouse, tmp_path)
    assert churn_rows(conn) == []
    assert "no churn model trained" in metadata["rules_not_evaluated"]["churn_risk_rising"]
    # A model registered, but the day not scored by it (trained after the day was scored): not evaluated either.
    plant(conn, "m1", {WEEK_AGO: (0.15, "m1")})
    metadata = run_day(scored, warehouse, tmp_path)
    assert churn_rows(conn) == []
    assert "no churn_probability" in metadata["rules_not_evaluated"]["churn_risk_rising"]


def test_the_rise_is_the_same_model_on_both_days_not_the_stored_week_old_score(scored, warehouse, conn, tmp_path):
    # A week ago m1 stored 0.15; today m2 scores 0.41 and, on the same week-old row, 0.38: m2 sees no rise of
    # 0.1, so a new model is not a rise (the stored 0.15 is never compared with today's 0.41).
    plant(conn, "m2", {WEEK_AGO: (0.15, "m1"), DAY - timedelta(days=1): (0.24, "m2", 0.20), DAY: (0.41, "m2", 0.38)})
    run_day(scored, warehouse, tmp_path)
    assert churn_rows(conn) == []
    # The same stored week-old score, but m2 scores the week-old row 0.15: a rise as m2 sees it fires, even
    # though another model scored that day (a weekly retrain always puts one in between).
    plant(conn, "m2", {WEEK_AGO: (0.15, "m1"), DAY - timedelta(days=1): (0.24, "m2", 0.20), DAY: (0.41, "m2", 0.15)})
    run_day(scored, warehouse, tmp_path)
    assert churn_rows(conn) == [("s_busy0", "call", "sent")]
