"""A new user's own data, end to end (issue 17): a whitespace-separated, header-less purchase log with
repeated lines, customers derived from it, the daily job over its days with no environment variable but
CS_PIPELINE_HOME, scores; `materialize` on one asset; `db start/stop/status`; the partition error."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg
import pytest

from cs_pipeline.core.partitions import PartitionRangeError, check_days_in_partitions
from cs_pipeline.core.paths import PROJECT_ROOT

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
    for part in ("1997-01-01", "2024-01-01..2026-01-11", "CS_PIPELINE_PARTITION_START"):
        assert part in message
    check_days_in_partitions(date(2024, 1, 1), date(2026, 1, 11), date(2024, 1, 1), today=date(2026, 1, 10))


def test_purchase_log_to_scores_with_two_commands(tmp_path):
    home = tmp_path / "home"
    status = _cli(home, "db", "status")
    assert status.returncode == 3 and "down" in status.stdout
    started = _cli(home, "db", "start", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert _cli(home, "db", "status").returncode == 0
        url = _cli(home, "db", "url")
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
