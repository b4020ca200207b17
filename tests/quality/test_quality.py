"""Quality gates: GX 1.x suites as blocking asset checks. A clean day passes; a corrupted day (a tenth
of the volume, wrong enums, future timestamps) fails its gate and nothing downstream runs for it;
warnings are reported without blocking."""

from __future__ import annotations

from pathlib import Path

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest

from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.quality.gx import GateRunner, day_parameters, volume_band
from cs_pipeline.runtime.runner import run_job_over_range
from tests.helpers import reset_warehouse

pytestmark = pytest.mark.slow


def test_volume_band_and_day_window():
    assert volume_band([]) == {"min_rows": 0, "max_rows": 10**12}
    assert volume_band([1000, 1000, 1000]) == {"min_rows": 300, "max_rows": 3001}
    now = datetime(2025, 6, 9, 12, 0, tzinfo=timezone.utc)
    params = day_parameters(date(2025, 6, 9), now)
    assert params["day_end_epoch"] == now.timestamp()  # never in the future
    assert day_parameters(date(2025, 6, 8), now)["day_end_epoch"] < now.timestamp()


def test_suite_reports_observed_values_and_severities(tmp_path):
    runner = GateRunner(tmp_path / "docs")
    frame = pd.DataFrame({"supplier_id": ["s1", "s2", None], "as_of_date": [date(2025, 6, 9)] * 3,
                          "health_score": [50.0, 120.0, 80.0], "risk_level": ["at_risk", "healthy", "bogus"],
                          "churn_risk_score": [50.0, 0.0, 20.0], "engagement_score": [40.0, 90.0, 70.0],
                          "trend": [None, "stable", "improving"], "scorecard_version": ["v1"] * 3})
    result = runner.validate(frame, "customer_health", {**day_parameters(date(2025, 6, 9)), **volume_band([])}, "t")
    assert not result.passed and result.blocking_failed
    failed = {(d["expectation"], d["column"]): d for d in result.details if not d["success"]}
    assert failed[("expect_column_values_to_be_between", "health_score")]["unexpected_sample"] == [120.0]
    assert failed[("expect_column_values_to_be_in_set", "risk_level")]["unexpected_count"] == 1
    assert result.docs_path and result.docs_path.endswith(".html")


def test_data_docs_only_for_failed_batches(tmp_path):
    """Issue 18: rendering Data Docs for every passing batch cost 0.56 s per gate; only a failed batch,
    the one someone has to open, gets its page."""
    runner = GateRunner(tmp_path / "docs")
    good = pd.DataFrame({"supplier_id": ["s1", "s2"], "as_of_date": [date(2025, 6, 9)] * 2,
                         "health_score": [50.0, 80.0], "risk_level": ["at_risk", "healthy"],
                         "churn_risk_score": [50.0, 20.0], "engagement_score": [40.0, 70.0],
                         "trend": ["stable", "improving"], "scorecard_version": ["v1"] * 2})
    parameters = {**day_parameters(date(2025, 6, 9)), **volume_band([])}
    passed = runner.validate(good, "customer_health", parameters, "good")
    assert passed.passed and passed.evaluated > 5 and passed.docs_path is None
    assert not list((tmp_path / "docs").glob("**/*.html"))
    bad = good.assign(health_score=[50.0, 130.0])
    failed = runner.validate(bad, "customer_health", parameters, "bad")
    assert not failed.passed and failed.docs_path and Path(failed.docs_path).exists()
    assert "bad" in failed.docs_path and len(failed.details) == len(passed.details)


@pytest.fixture(scope="module")
def gated(settings, warehouse, tmp_path_factory):
    with warehouse.connect() as conn:
        reset_warehouse(conn)
        conn.execute("DROP TABLE IF EXISTS marts.customer_health, marts.success_milestones CASCADE")
        conn.execute("DROP TABLE IF EXISTS ops.validation_results")
        conn.commit()
    landing = tmp_path_factory.mktemp("gx_landing")
    first = date(2025, 4, 1)
    generate(GeneratorConfig(suppliers=60, days=10, start=first, seed=9, out=landing))
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing}))
    instance = dg.DagsterInstance.ephemeral()
    assert all(s.success for s in run_job_over_range(defs, "daily_customer_success", first, date(2025, 4, 8),
                                                     instance, days_per_run=8))
    return defs, instance, landing


def _checks(result) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()}


def test_clean_day_passes_every_gate(gated, conn):
    rows = conn.execute("SELECT asset, bool_and(passed) FROM ops.validation_results GROUP BY 1 ORDER BY 1").fetchall()
    assert rows and all(passed for _, passed in rows)
    assert {a for a, _ in rows} == {"raw/activity_events", "raw/billing_events", "raw/suppliers",
                                    "raw/support_tickets", "marts/customer_health"}


def test_corrupted_day_is_stopped_at_the_gate(gated, conn):
    defs, instance, landing = gated
    day = date(2025, 4, 9)
    path = landing / f"activity_events_{day}.csv"
    events = pd.read_csv(path, dtype=str, keep_default_na=False)
    small = events.iloc[: max(1, len(events) // 10)].copy()
    small.loc[small.index[:3], "event_name"] = "teleported"  # wrong enum: quarantined, raises the rejected share
    small.to_csv(path, index=False)
    job = defs.resolve_job_def("daily_customer_success")
    result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
    checks = _checks(result)
    assert checks["gx_raw_activity_events"] == (False, "ERROR")
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "raw/activity_events" in materialized
    # Nothing downstream of the gated asset runs; assets that do not read it (e.g. staging of billing) may.
    graph = defs.resolve_asset_graph()
    below = {k.to_user_string() for k in dg.AssetSelection.assets(["raw", "activity_events"]).downstream().resolve(graph)}
    assert {"marts/supplier_engagement_daily", "marts/customer_health"} <= below
    past_gate = sorted(materialized & below - {"raw/activity_events"})
    assert not past_gate, f"materialised past a failed blocking gate: {past_gate}"
    assert conn.execute("SELECT count(*) FROM marts.supplier_engagement_daily WHERE as_of_date = %s",
                        (day,)).fetchone()[0] == 0
    [details] = conn.execute("SELECT details FROM ops.validation_results WHERE asset = 'raw/activity_events' "
                             "AND partition_date = %s ORDER BY validation_id DESC LIMIT 1", (day,)).fetchone()
    failing = {d["expectation"] for d in details if not d["success"]}
    assert {"expect_table_row_count_to_be_between", "expect_column_values_to_be_between"} <= failing


def test_future_timestamps_fail_the_gate(gated, conn, settings):
    defs, instance, landing = gated
    today = datetime.now(timezone.utc).date()
    later = (datetime.now(timezone.utc) + timedelta(hours=1))
    if later.date() != today:
        pytest.skip("too close to midnight UTC for an in-day future timestamp")
    path = landing / f"billing_events_{today}.csv"
    pd.DataFrame([{"billing_event_id": "b1", "supplier_id": "sup_000002", "occurred_at": later.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "event_type": "invoice_paid", "amount": "19.00", "currency": "GBP", "tier": ""}]).to_csv(path, index=False)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key=today.isoformat(), instance=instance, raise_on_error=False,
                                    asset_selection=[dg.AssetKey(["raw", "billing_events"])])
    assert _checks(result)["gx_raw_billing_events"] == (False, "ERROR")


def test_warnings_do_not_block(gated, conn):
    defs, instance, landing = gated
    day = date(2025, 4, 10)
    path = landing / f"activity_events_{day}.csv"
    events = pd.read_csv(path, dtype=str, keep_default_na=False)
    events.loc[events.index[:5], "user_id"] = ""  # user_id null: a warning-level expectation
    events.to_csv(path, index=False)
    job = defs.resolve_job_def("daily_customer_success")
    result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
    assert _checks(result)["gx_raw_activity_events"] == (False, "WARN")
    assert conn.execute("SELECT count(*) FROM marts.supplier_engagement_daily WHERE as_of_date = %s",
                        (day,)).fetchone()[0] > 0
