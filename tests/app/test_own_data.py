"""A new user's own data, end to end (issue 17): a whitespace-separated, header-less purchase log with
repeated lines, customers derived from it, the daily job over its days with no environment variable but
CS_PIPELINE_HOME, scores; `materialize` on one asset; `db start/stop/status`; the partition error."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from cs_pipeline.core.partitions import PartitionRangeError, check_days_in_partitions
from cs_pipeline.core.paths import DBT_PROJECT_DIR, FEATURE_CATALOGUE_CSV, PROJECT_ROOT

pytestmark = pytest.mark.slow


def _cli(home: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CS_PIPELINE_") and k != "DAGSTER_HOME"}
    env["CS_PIPELINE_HOME"] = str(home)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "cs_pipeline.cli", *args], env=env, cwd=home.parent,
                          capture_output=True, text=True, timeout=timeout)


def test_partition_error_is_one_line_naming_day_range_and_variable():
    with pytest.raises(PartitionRangeError) as caught:
        check_days_in_partitions(date(1997, 1, 1), date(1997, 1, 3), date(2024, 1, 1), "by default",
                                 today=date(2026, 1, 10))
    message = str(caught.value)
    assert "\n" not in message
    for part in ("1997-01-01", "2024-01-01..2026-01-10", "CS_PIPELINE_PARTITION_START"):
        assert part in message
    check_days_in_partitions(date(2024, 1, 1), date(2026, 1, 10), date(2024, 1, 1), today=date(2026, 1, 10))


def test_partition_check_refuses_tomorrow_and_reversed_ranges():
    """Issue 29: the newest daily partition is today (UTC); tomorrow was let through and Dagster then
    failed with "Could not find a partition"; a reversed range failed inside the run."""
    with pytest.raises(PartitionRangeError, match="2026-01-11 is outside .* has not begun yet"):
        check_days_in_partitions(date(2026, 1, 11), date(2026, 1, 11), date(2024, 1, 1), today=date(2026, 1, 10))
    with pytest.raises(PartitionRangeError, match=r"ends before it starts.*--start 2026-01-01 --end 2026-01-05"):
        check_days_in_partitions(date(2026, 1, 5), date(2026, 1, 1), date(2024, 1, 1), today=date(2026, 1, 10))
    import dagster as dg

    from cs_pipeline.core.partitions import daily_partitions

    today = datetime.now(timezone.utc).date()
    keys = daily_partitions(today - timedelta(days=3)).get_partition_keys()
    assert keys[-1] == today.isoformat()  # the rule above matches Dagster's own partitions
    assert isinstance(daily_partitions(today), dg.DailyPartitionsDefinition)


def test_purchase_log_to_scores_with_two_commands(tmp_path):
    home = tmp_path / "home"
    status = _cli(home, "db", "status")
    assert status.returncode == 3 and "down" in status.stdout
    started = _cli(home, "db", "start", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert _cli(home, "db", "status").returncode == 0
        url = _cli(home, "db", "url", "--show-password")
        assert url.returncode == 0 and "db start" in url.stderr  # says who keeps the server up
        conninfo = url.stdout.strip()

        # 1. Import + run over the log's days; no CS_PIPELINE_PARTITION_START anywhere.
        done = _cli(home, "import", "--mapping", str(PROJECT_ROOT / "mappings" / "purchase_log.yaml"),
                    "--from", str(PROJECT_ROOT / "tests" / "data"), "--run")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "1997-01-01..1997-01-21" in done.stdout and "per stage" in done.stdout
        assert str(home / "logs" / "import.log") in " ".join(done.stdout.split())
        assert len(done.stdout.splitlines()) < 60  # dbt's output went to the log, not the console
        assert "BetaWarning" not in done.stderr and "SupersessionWarning" not in done.stderr
        with psycopg.connect(conninfo) as conn:
            scored = conn.execute("SELECT count(*), count(DISTINCT supplier_id), min(health_score), max(health_score) "
                                  "FROM marts.customer_health WHERE as_of_date = '1997-01-21'").fetchone()
            customers = len({line.split()[0] for line in (PROJECT_ROOT / "tests/data/purchase_log.txt").read_text().splitlines()})
            assert scored[0] == scored[1] == customers and 0 <= scored[2] <= scored[3] <= 100
            # Repeated lines were kept as distinct purchases.
            payments = conn.execute("SELECT count(*) FROM raw.billing_events").fetchone()[0]
            assert payments == len((PROJECT_ROOT / "tests/data/purchase_log.txt").read_text().splitlines())
            # No quality warning about logins without a user, and no volume block on quiet days.
            failing = conn.execute("SELECT count(*) FROM ops.validation_results WHERE NOT passed").fetchone()[0]
            assert failing == 0

        # 2. One asset for one day, on the persistent instance.
        one = _cli(home, "materialize", "--select", "marts/customer_health", "--partition", "1997-01-21")
        assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
        assert "health" in one.stdout and str(home / "logs" / "materialize.log") in " ".join(one.stdout.split())
        with psycopg.connect(conninfo.replace("dbname=cs_pipeline", "dbname=dagster")) as conn:
            runs = conn.execute("SELECT count(*) FROM runs WHERE pipeline_name = 'cs_pipeline_materialize' "
                                "AND status = 'SUCCESS'").fetchone()[0]
            assert runs == 1

        # 3. A day before the data: one line naming the day, the range and the variable.
        early = _cli(home, "run", "--start", "1996-12-30")
        assert early.returncode == 2
        lines = [line for line in early.stdout.splitlines() if line.strip()]
        assert len(lines) == 1 and "1996-12-30" in lines[0] and "1997-01-01.." in lines[0]
        assert "CS_PIPELINE_PARTITION_START" in lines[0]
    finally:
        stopped = _cli(home, "db", "stop", timeout=300)
    assert stopped.returncode == 0 and "down" in stopped.stdout
    assert _cli(home, "db", "status").returncode == 3


OWN_PRODUCT = PROJECT_ROOT / "tests" / "data" / "own_product"


def _expected_by_hand(as_of: date) -> dict[str, tuple[int, float]]:
    """Per account of tests/data/own_product/events.csv: (active days in the 30 days to ``as_of``, adoption
    breadth) by the catalogue's rule (a core feature is adopted when used on at least 2 distinct days in
    30), counting only events of the catalogue (the others are rejected)."""
    import csv

    catalogue = {r["event_name"]: r for r in csv.DictReader((OWN_PRODUCT / "catalogue.csv").open())}
    core = {r["feature"] for r in catalogue.values() if r["is_core"] == "true"}
    days: dict[str, set[date]] = {}
    core_days: dict[tuple[str, str], set[date]] = {}
    for row in csv.DictReader((OWN_PRODUCT / "events.csv").open()):
        day = date.fromisoformat(row["at"][:10])
        if row["event"] not in catalogue or not 0 <= (as_of - day).days < 30:
            continue
        days.setdefault(row["account"], set()).add(day)
        feature = catalogue[row["event"]]["feature"]
        if feature in core:
            core_days.setdefault((row["account"], feature), set()).add(day)
    return {account: (len(active), sum(len(core_days.get((account, f), ())) >= 2 for f in core) / len(core))
            for account, active in days.items()}


def test_own_product_with_its_own_catalogue_to_scores(tmp_path):
    """Issue 17 item 3: a product that is not WedSync, imported through a mapping with ``catalogue:``, run
    through the daily job: the seed, ingestion and the generic metrics follow its catalogue; the WedSync
    metrics (clients, forms, journeys) are missing, and the scorecard leaves those components out."""
    home = tmp_path / "home"
    shipped = FEATURE_CATALOGUE_CSV.read_text()
    started = _cli(home, "db", "start", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        conninfo = _cli(home, "db", "url", "--show-password").stdout.strip()
        done = _cli(home, "import", "--mapping", str(OWN_PRODUCT / "mapping.yaml"), "--from", str(OWN_PRODUCT), "--run")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "2025-03-01..2025-03-10" in done.stdout
        recorded = home / "catalogue" / "feature_catalogue.csv"
        assert recorded.read_text() == (OWN_PRODUCT / "catalogue.csv").read_text()
        # dbt loaded the seed from a staged copy and left it (and WedSync's seed) as they were.
        staged = list((DBT_PROJECT_DIR / "seeds_staged").glob("*/feature_catalogue.csv"))
        assert recorded.read_text() in [p.read_text() for p in staged]
        assert FEATURE_CATALOGUE_CSV.read_text() == shipped
        as_of = date(2025, 3, 10)
        expected = _expected_by_hand(as_of)
        with psycopg.connect(conninfo) as conn:
            seed = {r[0] for r in conn.execute("SELECT event_name FROM seeds.feature_catalogue")}
            assert seed == {"login", "report_built", "dashboard_shared"}
            # Ingestion checks event names against the product's catalogue: the unknown one is rejected.
            rejected = conn.execute("SELECT raw_record, reason FROM raw.rejected_rows "
                                    "WHERE source = 'activity_events'").fetchall()
            assert len(rejected) == 1 and "export_scheduled" in rejected[0][0], rejected
            assert conn.execute("SELECT count(*) FROM raw.activity_events WHERE event_name = 'report_built'"
                                ).fetchone()[0] > 0
            rows = conn.execute(
                "SELECT supplier_id, active_days_30d, adoption_breadth, core_features_total, clients_active_30d, "
                "client_activity_rate, forms_sent_30d, form_completion_rate, journeys_started_30d, "
                "journey_completion_rate FROM marts.supplier_engagement_daily WHERE as_of_date = %s", (as_of,)).fetchall()
            assert {r[0]: (r[1], float(r[2])) for r in rows} == expected
            assert {r[3] for r in rows} == {1}  # one core feature: reports
            assert all(value is None for r in rows for value in r[4:])  # WedSync-only metrics: missing, not 0
            health = conn.execute("SELECT supplier_id, health_score, missing_components, components "
                                  "FROM marts.customer_health WHERE as_of_date = %s", (as_of,)).fetchall()
            assert {h[0] for h in health} == set(expected)
            for _, score, missing, components in health:
                assert 0 <= score <= 100
                for name in ("client_activity", "form_completion", "journey_performance"):
                    assert components[name]["missing"] and name in missing
                assert not components["feature_adoption"]["missing"] and not components["login_recency"]["missing"]
    finally:
        _cli(home, "db", "stop", timeout=300)


def test_a_failed_day_names_the_asset_the_day_and_the_reason_on_the_console(tmp_path):
    """Issue 29 item 2: a day without its activity file printed only "a step failed: see run.log"; the
    console now names the failing asset (its step), the day and the one-line reason with the file to add."""
    from cs_pipeline.feeds.generate import GeneratorConfig, generate

    home = tmp_path / "home"
    landing = home / "landing"
    day = date(2025, 3, 2)
    generate(GeneratorConfig(suppliers=5, days=2, start=day - timedelta(days=1), seed=7, out=landing))
    for path in landing.glob(f"activity_events_{day.isoformat()}.*"):
        path.unlink()
    done = _cli(home, "run", "--start", day.isoformat(), "--end", day.isoformat(), timeout=900)
    out = " ".join(done.stdout.split())
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"raw__activity_events for {day}: missing landing file for activity_events on {day}" in out, out[-3000:]
    assert f"expected activity_events_{day}.csv" in out and "a step failed: see" not in out
