"""The health stage's quality gate: ``marts.customer_health`` checked by the Great Expectations suite
``expectations/customer_health.json`` (through ``cs_pipeline.quality``)."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
from psycopg import sql

from cs_pipeline.quality.batch import read_gate_batch
from cs_pipeline.quality.gx import (
    GateResult,
    GateRunner,
    day_parameters,
    ensure_validation_table,
    record_validation,
    timed_gate,
    volume_band,
)


@timed_gate
def health_gate(conn: psycopg.Connection, runner: GateRunner, days: list[date], run_id: str | None) -> GateResult:
    """Validate marts.customer_health for ``days`` (one batch) with suite ``customer_health`` and record
    the result for each day. The volume band (trailing 7-day mean of rows per day) applies to one day."""
    first, last = min(days), max(days)
    frame = read_gate_batch(conn, "customer_health", "marts", "customer_health",
                            sql.SQL("as_of_date BETWEEN %s AND %s"), (first, last), directory=runner.suites_dir)
    history = [int(r[0]) for r in conn.execute(
        "SELECT count(*) FROM marts.customer_health WHERE as_of_date >= %s AND as_of_date < %s GROUP BY as_of_date",
        (first - timedelta(days=7), first)).fetchall()] if len(days) == 1 else []
    parameters = {**day_parameters(last), **volume_band(history)}
    result = runner.validate(frame, "customer_health", parameters, f"customer_health_{first}_{last}")
    ensure_validation_table(conn)
    for day in days:
        record_validation(conn, "marts/customer_health", day, result, run_id)
    return result
