"""A small scored warehouse for the dashboard tests: generated data through the daily job, the escalation
sensor and intervention_job (as ``cs-pipeline demo`` does), intervention outcomes and the backtest; then
the dashboard's access set-up. Shared by the harness test and the browser test (one build per module)."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.interventions.defs import email_from_env, intervention_job, risk_escalation_sensor
from cs_pipeline.core.resources import warehouse_from_settings
from cs_pipeline.runtime.runner import run_job_over_range
from tests.helpers import reset_warehouse

SUPPLIERS = 60
START = date(2025, 3, 1)
END = date(2025, 4, 19)  # 50 days: enough for 7/30-day deltas and a backtest


MARKER = "marts.dashboard_test_fixture"


def _still_built(conn) -> bool:
    """True when this session already built the warehouse and nothing has reset it since (the marker in
    marts holds the newest day's row count; any reset drops marts or customer_health)."""
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass('marts.customer_health') IS NOT NULL",
                        (MARKER,)).fetchone()[0]:
        return False
    expected = conn.execute(f"SELECT rows FROM {MARKER}").fetchone()
    actual = conn.execute("SELECT count(*) FROM marts.customer_health WHERE as_of_date = %s", (END,)).fetchone()
    return expected is not None and expected[0] == actual[0] > 0


def build_scored_warehouse(settings, warehouse, landing) -> date:
    """Fill the warehouse (once per session unless another test reset it); returns the newest scored day."""
    with warehouse.connect() as conn:
        if _still_built(conn):
            return END
        reset_warehouse(conn)
        conn.execute("DROP TABLE IF EXISTS ops.support_interactions, ops.in_app_notifications, ops.interventions "
                     "CASCADE")
        conn.commit()
    generate(GeneratorConfig(suppliers=SUPPLIERS, days=(END - START).days + 1, start=START, seed=11, out=landing))
    local = settings.model_copy(update={"landing_dir": landing})
    defs = build_definitions(local)
    instance = dg.DagsterInstance.ephemeral()
    summaries = run_job_over_range(defs, "daily_customer_success", START, END - timedelta(days=1), instance,
                                   days_per_run=60)
    summaries += run_job_over_range(defs, "daily_customer_success", END, END, instance, days_per_run=1)
    assert all(s.success for s in summaries)
    resources = {"warehouse": warehouse_from_settings(local), "email": email_from_env(local)}
    tick = risk_escalation_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources={"warehouse": resources["warehouse"]}))
    for request in tick.run_requests or []:
        assert intervention_job.execute_in_process(run_config=request.run_config, instance=instance,
                                                   resources=resources, tags=request.tags).success
    assert defs.resolve_job_def("health_score_backtest_job").execute_in_process(instance=instance).success
    assert defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["marts", "intervention_outcomes"])]).success
    from cs_pipeline.app.dashboard.connection import prepare_dashboard_access

    prepare_dashboard_access(local)
    with warehouse.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {MARKER}")
        conn.execute(f"CREATE TABLE {MARKER} (rows bigint NOT NULL)")
        conn.execute(f"INSERT INTO {MARKER} SELECT count(*) FROM marts.customer_health WHERE as_of_date = %s", (END,))
        conn.commit()
    return END
