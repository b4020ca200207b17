"""dbt marts built through Dagster against the embedded PostgreSQL: hand-worked values, incremental
equals full refresh, and the read-only BI role over a real connection."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.runtime.runner import run_job_over_range
from cs_pipeline.transform.dbt import dbt_executable
from cs_pipeline.core.window import DayWindow
from cs_pipeline.transform.dbt import dbt_env
from cs_pipeline.core.paths import DBT_PROJECT_DIR

from cs_pipeline.health.seasonal import aggregate_daily_seasonal_sums, read_category_sums, read_daily_seasonal_sums
from tests.helpers import (BILLING_COLUMNS, EVENT_COLUMNS, INTERMEDIATE_WINDOW_TABLES, SUPPLIER_COLUMNS, TICKET_COLUMNS,
                           _write, reset_warehouse, window_indexes)

pytestmark = pytest.mark.slow

def hand_made_landing(directory: Path) -> None:
    """Two suppliers over 2025-06-01..03 (see test_marts_match_values_worked_by_hand)."""
    directory.mkdir(parents=True, exist_ok=True)
    s1 = ["s1", "Juniper Lane Photography", "a@b.example", "photographer", "starter", "GB",
          "2025-05-01T10:00:00Z", "2025-05-02T10:00:00Z", "active", "", "19.00", "GBP"]
    s2 = ["s2", "Oak Hall", "c@d.example", "venue", "professional", "GB",
          "2025-01-01T10:00:00Z", "2025-01-02T10:00:00Z", "active", "", "49.00", "GBP"]
    s2_cancelled = s2[:8] + ["cancelled", "2025-06-02T09:00:00Z", "0", "GBP"]
    snapshots = {"2025-06-01": [s1, s2], "2025-06-02": [s1, s2_cancelled], "2025-06-03": [s1, s2_cancelled]}
    events = {
        "2025-06-01": [["a1", "s1", "u1", "login", "2025-06-01T09:00:00Z", "", ""],
                       ["a2", "s1", "u1", "form_sent", "2025-06-01T09:10:00Z", "c1", json.dumps({"form_id": "f1"})],
                       ["a3", "s1", "u1", "form_sent", "2025-06-01T09:20:00Z", "c2", json.dumps({"form_id": "f2"})],
                       ["a4", "s1", "u1", "form_completed", "2025-06-01T15:00:00Z", "c1", ""],
                       ["a5", "s1", "u1", "client_added", "2025-06-01T16:00:00Z", "c3", ""],
                       ["a6", "s2", "u9", "login", "2025-06-01T08:00:00Z", "", ""]],
        "2025-06-02": [["b1", "s1", "u2", "login", "2025-06-02T09:00:00Z", "", ""],
                       ["b2", "s1", "u2", "journey_started", "2025-06-02T10:00:00Z", "c1", ""],
                       ["b3", "s1", "u2", "journey_completed", "2025-06-02T18:00:00Z", "c1", ""],
                       ["b4", "s1", "u2", "message_sent", "2025-06-02T19:00:00Z", "c2", ""]],
        "2025-06-03": [["c1", "s1", "u1", "form_completed", "2025-06-03T08:00:00Z", "c2", ""],
                       ["c2", "s1", "u1", "timeline_shared", "2025-06-03T09:00:00Z", "c1", ""]],
    }
    tickets = {"2025-06-01": [], "2025-06-02": [["t1", "s1", "2025-06-02T11:00:00Z", "", "chat", "technical",
                                                 "urgent", "", "15"]], "2025-06-03": []}
    billing = {"2025-06-01": [], "2025-06-02": [],
               "2025-06-03": [["i1", "s1", "2025-06-03T02:00:00Z", "invoice_failed", "19.00", "GBP", ""]]}
    for day in snapshots:
        _write(directory / f"suppliers_{day}.csv", SUPPLIER_COLUMNS, snapshots[day])
        _write(directory / f"activity_events_{day}.csv", EVENT_COLUMNS, events[day])
        _write(directory / f"support_tickets_{day}.csv", TICKET_COLUMNS, tickets[day])
        _write(directory / f"billing_events_{day}.csv", BILLING_COLUMNS, billing[day])


def run_days(settings, landing: Path, first: date, last: date, days_per_run: int) -> None:
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing}))
    summaries = run_job_over_range(defs, "daily_customer_success", first, last,
                                   dg.DagsterInstance.ephemeral(), days_per_run)
    assert all(s.success for s in summaries)


def rows(conn: psycopg.Connection, query: str, params=()) -> list[dict]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_pure_helpers():
    env = dbt_env("host=/tmp/pg user=postgres dbname=cs_pipeline")
    assert env == {"CS_PIPELINE_DBT_HOST": "/tmp/pg", "CS_PIPELINE_DBT_PORT": "5432",
                   "CS_PIPELINE_DBT_USER": "postgres", "CS_PIPELINE_DBT_PASSWORD": "",
                   "CS_PIPELINE_DBT_DBNAME": "cs_pipeline", "CS_PIPELINE_DBT_SSLMODE": "",
                   "CS_PIPELINE_DBT_SSLROOTCERT": "", "CS_PIPELINE_DBT_SSLCERT": "", "CS_PIPELINE_DBT_SSLKEY": ""}
    assert dbt_env("postgresql://bi:s3cret@db.example:6432/wh")["CS_PIPELINE_DBT_PORT"] == "6432"
    window = DayWindow(date(2025, 6, 1), date(2025, 6, 3))
    assert window.dbt_vars() == {"min_date": "2025-06-01", "max_date": "2025-06-03"}
    assert DayWindow.day(date(2025, 6, 1)).dbt_vars_arg() == [
        "--vars", '{"max_date": "2025-06-01", "min_date": "2025-06-01"}']
    with pytest.raises(ValueError, match="empty window"):
        DayWindow(date(2025, 6, 2), date(2025, 6, 1))
    assert window.dbt_env() == {
        "CS_PIPELINE_DBT_MIN_DATE": "2025-06-01", "CS_PIPELINE_DBT_MAX_DATE": "2025-06-03"}
    assert window.days() == [date(2025, 6, 1), date(2025, 6, 2), date(2025, 6, 3)] and len(window) == 3


def test_definitions_wire_dbt_layers_and_lineage(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["marts/supplier_engagement_daily"] == "marts"
    assert groups["staging/stg_wedsync__activity_events"] == "staging"
    assert groups["intermediate/int_supplier_feature_days"] == "intermediate"
    assert groups["seeds/feature_catalogue"] == "seeds"
    assert {g for g in groups.values()} >= {"ingest", "seeds", "staging", "intermediate", "marts"}
    upstream = graph.get(dg.AssetKey(["staging", "stg_wedsync__activity_events"])).parent_keys
    assert dg.AssetKey(["raw", "activity_events"]) in upstream
    daily = graph.get(dg.AssetKey(["marts", "supplier_engagement_daily"]))
    assert daily.partitions_def is not None
    # One dbt build per run (issue 18): the whole project is one multi-asset on the daily partitions.
    dim = graph.get(dg.AssetKey(["marts", "dim_suppliers"]))
    assert dim.partitions_def == daily.partitions_def
    assert len({graph.get(k).assets_def.node_def.name for k in graph.get_all_asset_keys()
                if "dbt" in graph.get(k).kinds}) == 1
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert any("unique_combination_supplier_engagement_daily" in name for name in checks)
    # The drift tests read several models: their meta ref makes each an asset check of its mart (without it
    # dagster-dbt logs an observation and a warning on every run).
    keys = {(tuple(c.asset_key.path), c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    assert (("marts", "supplier_engagement_daily"), "assert_engagement_rolling_sums_hold") in keys
    assert (("marts", "fct_feature_adoption"), "assert_feature_adoption_sums_hold") in keys


def test_marts_match_values_worked_by_hand(settings, warehouse, tmp_path):
    with warehouse.connect() as conn:
        reset_warehouse(conn)
    landing = tmp_path / "landing"
    hand_made_landing(landing)
    run_days(settings, landing, date(2025, 6, 1), date(2025, 6, 3), days_per_run=3)
    with warehouse.connect() as conn:
        eng = {(r["supplier_id"], r["as_of_date"].isoformat()): r for r in rows(
            conn, "SELECT * FROM marts.supplier_engagement_daily")}
        # s2 is cancelled from 06-02 on: a row only for 06-01.
        assert sorted(eng) == [("s1", "2025-06-01"), ("s1", "2025-06-02"), ("s1", "2025-06-03"),
                               ("s2", "2025-06-01")]
        s1 = eng[("s1", "2025-06-03")]
        assert s1["days_since_last_login"] == 1 and s1["last_login_date"] == date(2025, 6, 2)
        assert (s1["dau"], s1["wau"], s1["mau"], float(s1["stickiness"])) == (1, 2, 2, 0.5)
        assert (s1["events_7d"], s1["events_prev_7d"], s1["events_change_7d"]) == (11, 0, None)
        assert (s1["forms_sent_30d"], s1["forms_completed_30d"], float(s1["form_completion_rate"])) == (2, 2, 1.0)
        assert float(s1["journey_completion_rate"]) == 1.0
        assert (s1["clients_active_30d"], s1["clients_active_90d"], float(s1["client_activity_rate"])) == (3, 3, 1.0)
        # forms on 06-01 and 06-03 (2 days) is the only core feature adopted of 6.
        assert (s1["adopted_core_features"], s1["core_features_total"]) == (1, 6)
        assert float(s1["adoption_breadth"]) == pytest.approx(0.1667)
        assert (s1["open_tickets"], s1["urgent_open_tickets"], s1["tickets_opened_30d"]) == (1, 1, 1)
        assert s1["failed_invoices_30d"] == 1 and s1["csat_30d"] is None
        assert s1["lifecycle_stage"] == "active" and s1["days_since_signup"] == 33
        assert eng[("s1", "2025-06-01")]["adopted_core_features"] == 0
        assert eng[("s2", "2025-06-01")]["days_since_last_login"] == 0

        [day1] = rows(conn, "SELECT * FROM marts.fct_supplier_activity_daily "
                            "WHERE supplier_id = 's1' AND activity_date = '2025-06-01'")
        assert (day1["logins"], day1["active_users"], day1["events_total"], day1["clients_touched"]) == (1, 1, 5, 3)
        assert (day1["forms_sent"], day1["forms_completed"]) == (2, 1)
        assert day1["events_by_feature"] == {"client_management": 1, "forms": 3, "session": 1}
        [day3] = rows(conn, "SELECT * FROM marts.fct_supplier_activity_daily "
                            "WHERE supplier_id = 's1' AND activity_date = '2025-06-03'")
        assert (day3["logins"], day3["failed_invoices"], day3["tickets_opened"]) == (0, 1, 0)

        dims = {r["supplier_id"]: r for r in rows(conn, "SELECT * FROM marts.dim_suppliers")}
        assert dims["s1"]["lifecycle_stage"] == "active" and dims["s2"]["lifecycle_stage"] == "churned"
        assert dims["s2"]["cancelled_date"] == date(2025, 6, 2)
        assert "email" not in dims["s1"]

        adoption = {r["feature"]: r for r in rows(
            conn, "SELECT * FROM marts.fct_feature_adoption WHERE supplier_id = 's1'")}
        assert adoption["forms"]["adopted"] and adoption["forms"]["uses_30d"] == 4
        assert adoption["forms"]["first_used_date"] == date(2025, 6, 1)
        assert not adoption["journeys"]["adopted"] and adoption["reviews"]["last_used_date"] is None


def _mart_snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    out = {}
    for table in ("fct_supplier_activity_daily", "supplier_engagement_daily", "fct_feature_adoption",
                  "dim_suppliers", "fct_supplier_milestone_facts", "supplier_engagement_category_sums"):
        out[table] = conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY 1, 2, 3").format(sql.Identifier("marts", table))).fetchall()
    return out


def test_incremental_runs_equal_a_full_refresh(settings, warehouse, tmp_path):
    with warehouse.connect() as conn:
        reset_warehouse(conn)
    landing = tmp_path / "landing"
    first, days = date(2025, 3, 1), 40
    generate(GeneratorConfig(suppliers=60, days=days, start=first, seed=21, out=landing))
    last = date(2025, 4, 9)
    # Day by day for the last days, in larger windows before: the windows must not matter.
    run_days(settings, landing, first, date(2025, 4, 6), days_per_run=12)
    # Issue 18: the backfill analyzed the marts and customer_health; a daily run that changes a few percent
    # of them leaves their statistics as they are (PostgreSQL's autovacuum rule) instead of re-sampling them.
    # Issue 30: so it does the intermediate tables', whose B-tree on activity_date shows the planner a new
    # day (with BRIN alone they were analyzed every run). (analyze_count counts ANALYZE commands only, not
    # autovacuum's.)
    tables = ["marts.supplier_engagement_daily", "marts.fct_supplier_milestone_facts", "marts.customer_health",
              "intermediate.int_supplier_user_days"]

    def analyze_counts() -> list[int]:
        with warehouse.connect() as conn:
            return [conn.execute("SELECT analyze_count FROM pg_stat_all_tables WHERE relid = %s::regclass",
                                 (table,)).fetchone()[0] for table in tables]

    before = analyze_counts()
    assert all(count > 0 for count in before), before
    with warehouse.connect() as conn:
        assert window_indexes(conn) == {(table, "btree", "activity_date") for table in INTERMEDIATE_WINDOW_TABLES}
        # A table of an earlier version: BRIN on activity_date and no B-tree. The daily run swaps them.
        for (index,) in conn.execute(
                "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE indrelid = 'intermediate.int_supplier_client_days'::regclass "
                "AND a.attname = 'activity_date'").fetchall():
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(*index.split("."))))
        conn.execute("CREATE INDEX ON intermediate.int_supplier_client_days USING brin (activity_date)")
        conn.commit()
    run_days(settings, landing, date(2025, 4, 7), date(2025, 4, 7), days_per_run=1)
    after = analyze_counts()
    assert after == before, (before, after)
    with warehouse.connect() as conn:
        assert window_indexes(conn) == {(table, "btree", "activity_date") for table in INTERMEDIATE_WINDOW_TABLES}
    # A two-day window: the daily path (under 3 days) over several as-of days at once.
    run_days(settings, landing, date(2025, 4, 8), last, days_per_run=2)
    # Issue 18: the day-by-day runs parse partially (the window is not a --var, the parse state is the
    # warehouse's own), and the window does not stay in this process's environment.
    logs = sorted((settings.home / "dbt_target").glob("dbt_models-*/dbt.log"), key=lambda p: p.stat().st_mtime)
    assert len(logs) >= 4
    for log in logs[-3:]:
        text = log.read_text()
        assert "Partial parsing enabled" in text and "Unable to do partial parsing" not in text, log
    assert "CS_PIPELINE_DBT_MIN_DATE" not in __import__("os").environ
    with warehouse.connect() as conn:
        incremental = _mart_snapshot(conn)
        assert len(incremental["supplier_engagement_daily"]) > 1000
    env = {**__import__("os").environ, **dbt_env(warehouse.conninfo)}
    done = subprocess.run(
        [dbt_executable(), "build", "--full-refresh", *DayWindow(first, last).dbt_vars_arg(),
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
        env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    with warehouse.connect() as conn:
        full = _mart_snapshot(conn)
    for table in incremental:
        assert incremental[table] == full[table], table
    kept_seasonal_sums_equal_the_aggregated_ones(warehouse, env, first, last)
    # The dbt unit tests (left out of pipeline runs) pass on the built project.
    units = subprocess.run(
        [dbt_executable(), "test", "--select", "test_type:unit", "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR)], env=env, capture_output=True, text=True)
    assert units.returncode == 0, units.stdout[-3000:]
    assert int(re.search(r"PASS=(\d+)", units.stdout).group(1)) >= 5, units.stdout[-2000:]
    carried_sums_that_drift_are_flagged(warehouse, env, last)


def kept_seasonal_sums_equal_the_aggregated_ones(warehouse, env: dict, first: date, last: date) -> None:
    """Issue 30: the seasonal index's per-day sums kept in supplier_engagement_category_sums are those
    aggregated from supplier_engagement_daily, to the bit, for every number column; a build of the
    engagement mart alone rebuilds its days' sums too (they are its post-hook's, not another model's that a
    build may leave out); a metric the table lacks on a day is aggregated instead."""
    def kept_and_aggregated(conn, metrics):
        return (read_category_sums(conn, first, last, metrics),
                aggregate_daily_seasonal_sums(conn, first, last, metrics))

    with warehouse.connect() as conn:
        metrics = [name for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'marts' "
            "AND table_name = 'supplier_engagement_daily' AND data_type IN ('integer', 'numeric') "
            "ORDER BY ordinal_position").fetchall()]
        assert {"client_activity_rate", "stickiness", "revenue_90d", "dau"} <= set(metrics)
        kept, aggregated = kept_and_aggregated(conn, metrics)
        assert kept is not None and len(aggregated) > 0 and aggregated["stickiness__count"].sum() > 0
        pd.testing.assert_frame_equal(kept, aggregated, check_exact=True)
        # A day's sums lost outside the window the next build rebuilds, then a build of the engagement mart
        # alone: it sums that day again too. Then the table gone (a warehouse built before it existed).
        lost = first + timedelta(days=3)
        conn.execute("DELETE FROM marts.supplier_engagement_category_sums WHERE as_of_date = %s", (lost,))
        conn.commit()

    def build_engagement_alone() -> None:
        done = subprocess.run(
            [dbt_executable(), "run", "--select", "supplier_engagement_daily", *DayWindow(last, last).dbt_vars_arg(),
             "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
            env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:]

    build_engagement_alone()
    with warehouse.connect() as conn:
        kept, aggregated = kept_and_aggregated(conn, metrics)
        assert kept is not None and (kept["as_of_date"] == lost).any()
        pd.testing.assert_frame_equal(kept, aggregated, check_exact=True)
        conn.execute("DROP TABLE marts.supplier_engagement_category_sums")
        conn.commit()
    build_engagement_alone()
    with warehouse.connect() as conn:
        kept, aggregated = kept_and_aggregated(conn, metrics)
        assert kept is not None
        pd.testing.assert_frame_equal(kept, aggregated, check_exact=True)
        # One metric missing on one day: that read aggregates, and still gives the same frame.
        conn.execute("DELETE FROM marts.supplier_engagement_category_sums WHERE metric = 'stickiness' "
                     "AND as_of_date = %s", (last,))
        assert read_category_sums(conn, first, last, ["stickiness", "dau"]) is None
        assert read_category_sums(conn, first, last, ["dau"]) is not None
        pd.testing.assert_frame_equal(read_daily_seasonal_sums(conn, first, last, ["stickiness", "dau"]),
                                      aggregate_daily_seasonal_sums(conn, first, last, ["stickiness", "dau"]),
                                      check_exact=True)
        conn.rollback()


def carried_sums_that_drift_are_flagged(warehouse, env: dict, last: date) -> None:
    """Issue 30: the daily path carries rolling sums from the stored row of the day before its window; a
    stored row that drifted shows as a warning of the build's data tests (dbt_project/tests/assert_*_sums_hold.sql;
    severity warn: a drift never halts the daily run), where the same build on the true row has none."""
    def build(selection: list[str], day: date) -> subprocess.CompletedProcess:
        return subprocess.run(
            [dbt_executable(), "build", "--select", *selection, *DayWindow(day, day).dbt_vars_arg(),
             "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
            env=env, capture_output=True, text=True)

    engagement = ["supplier_engagement_daily", "assert_engagement_rolling_sums_hold"]
    done = build(engagement, last)
    assert done.returncode == 0 and "Warning in test" not in done.stdout, done.stdout[-3000:]
    with warehouse.connect() as conn:
        conn.execute("UPDATE marts.supplier_engagement_daily SET logins_30d = logins_30d + 1 WHERE as_of_date = %s",
                     (last - timedelta(days=1),))
    done = build(engagement, last)
    assert done.returncode == 0 and "Warning in test assert_engagement_rolling_sums_hold" in done.stdout, \
        done.stdout[-3000:]

    adoption = ["fct_feature_adoption", "assert_feature_adoption_sums_hold"]
    done = build(adoption, last + timedelta(days=1))
    assert done.returncode == 0 and "Warning in test" not in done.stdout, done.stdout[-3000:]
    with warehouse.connect() as conn:
        conn.execute("UPDATE marts.fct_feature_adoption SET uses_30d = uses_30d + 1")
    done = build(adoption, last + timedelta(days=2))
    assert done.returncode == 0 and "Warning in test assert_feature_adoption_sums_hold" in done.stdout, \
        done.stdout[-3000:]


def test_bi_role_reads_marts_and_is_refused_on_raw(settings, warehouse, conn):
    role = settings.bi_role
    # Marts exist from the tests above; make sure the role is set up even when run alone.
    from cs_pipeline.core.access import ensure_bi_role

    conn.execute("CREATE SCHEMA IF NOT EXISTS marts")
    conn.execute("CREATE TABLE IF NOT EXISTS marts.bi_probe (x int)")
    conn.commit()
    with warehouse.connect(autocommit=True) as admin:
        ensure_bi_role(admin, role)
        ensure_bi_role(admin, role)  # idempotent
        admin.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal("bi-test")))
        admin.execute("CREATE TABLE IF NOT EXISTS marts.created_later (y int)")
    params = conninfo_to_dict(warehouse.conninfo)
    params.update(user=role, password="bi-test")
    with psycopg.connect(make_conninfo(**params)) as bi:
        bi.execute("SELECT count(*) FROM marts.bi_probe").fetchone()
        bi.execute("SELECT count(*) FROM marts.created_later").fetchone()  # default privileges
        for table in ("raw.activity_events", "raw.suppliers", "ops.load_audit"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bi.execute(f"SELECT 1 FROM {table} LIMIT 1")
            bi.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bi.execute("CREATE TABLE marts.bi_write (z int)")


def test_dbt_invocations_open_no_adapter_in_the_run_process(warehouse, monkeypatch):
    """Issue 18: dagster-dbt's resource parsed dbt's 487 macros in the Dagster process before every
    invocation (3.3 s of each run) for metadata cs_pipeline never fetches, and ran ``dbt --version`` in a
    subprocess (2.5 s); ours runs dbt without either."""
    import dagster_dbt.core.resource as dagster_dbt_resource

    from cs_pipeline.transform.defs import dbt_project, dbt_resource

    for key, value in dbt_env(warehouse.conninfo).items():
        monkeypatch.setenv(key, value)
    version_checks = []
    real_check_output = dagster_dbt_resource.check_output

    def spy(args, *rest, **kwargs):
        version_checks.append(list(args))
        return real_check_output(args, *rest, **kwargs)

    monkeypatch.setattr(dagster_dbt_resource, "check_output", spy)
    invocation = dbt_resource().cli(["ls", "--select", "dim_suppliers", "--resource-type", "model"],
                                    manifest=dbt_project().manifest_path)
    lines = [event.raw_event["info"]["msg"] for event in invocation.stream_raw_events()]
    assert invocation.is_successful()
    assert "cs_pipeline.marts.dim_suppliers" in lines
    assert invocation.adapter is None
    assert version_checks == []


def test_parse_state_of_another_checkout_is_parsed_again(tmp_path, monkeypatch):
    """A home's dbt parse state made from another checkout's project (a newer manifest than this
    project's files) is parsed again for this one: dbt would find its project config changed and parse
    in full on every run (issue 30, seen when two checkouts shared a warehouse)."""
    import shutil

    import cs_pipeline.transform.dbt as dbt_module
    from cs_pipeline.transform.dbt import prepare_parse_state

    other = tmp_path / "other" / "dbt_project"
    shutil.copytree(dbt_module.DBT_PROJECT_DIR, other, ignore=shutil.ignore_patterns("target", "logs"))
    env = dbt_env("host=/tmp/pg user=postgres dbname=cs_pipeline")
    state = tmp_path / "dbt_target"
    monkeypatch.setattr(dbt_module, "DBT_PROJECT_DIR", other)
    prepare_parse_state(state, env)
    parsed_other = (state / "manifest.json").stat().st_mtime_ns
    assert str(other) in (state / "manifest.json").read_text()
    monkeypatch.undo()
    prepare_parse_state(state, env)
    assert (state / "manifest.json").stat().st_mtime_ns > parsed_other
    assert str(other) not in (state / "manifest.json").read_text()
    parsed_this = (state / "manifest.json").stat().st_mtime_ns
    prepare_parse_state(state, env)  # and then kept: no parse when nothing changed
    assert (state / "manifest.json").stat().st_mtime_ns == parsed_this
