"""Quality gates for the pipeline's assets: the data a suite sees, its parameters, and the Dagster
asset-check result it becomes."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.health.store import read_frame
from cs_pipeline.ingest.loader import LoadReport
from cs_pipeline.ingest.sources import catalogue_event_names, sources
from cs_pipeline.metadata import markdown_table
from cs_pipeline.quality.gx import (
    MAX_REJECTED_SHARE,
    GateResult,
    GateRunner,
    day_parameters,
    ensure_validation_table,
    record_validation,
    volume_band,
)
from cs_pipeline.schema import partition_table_name


def trailing_volumes(conn: psycopg.Connection, source: str, day: date, days: int = 7) -> list[int]:
    """Rows loaded on the ``days`` days before ``day`` (those that were loaded)."""
    rows = conn.execute("SELECT rows_loaded FROM ops.load_audit WHERE source = %s AND partition_date >= %s "
                        "AND partition_date < %s", (source, day - timedelta(days=days), day)).fetchall()
    return [int(r[0]) for r in rows]


def _typed(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Timestamp columns as UTC datetimes and numbers as floats, also when the frame is empty."""
    for column in sources()[source].columns:
        if column.name not in frame:
            continue
        if column.type == "timestamptz":
            frame[column.name] = pd.to_datetime(frame[column.name], utc=True)
        elif column.type in ("numeric", "integer"):
            frame[column.name] = pd.to_numeric(frame[column.name], errors="coerce").astype(float)
    return frame


def raw_gate(conn: psycopg.Connection, runner: GateRunner, report: LoadReport, run_id: str | None) -> GateResult:
    """Validate the loaded partition of ``report`` with suite ``raw_<source>`` and record the result."""
    source, day = report.source, report.partition_date
    frame = _typed(read_frame(conn, sql.SQL("SELECT * FROM {}").format(
        sql.Identifier("raw", partition_table_name(source, day)))), source)
    share = report.rows_rejected / report.records_in_file if report.records_in_file else 0.0
    frame["_rejected_share"] = share
    parameters = {**day_parameters(day), **volume_band(trailing_volumes(conn, source, day)),
                  "max_rejected_share": MAX_REJECTED_SHARE, "event_names": list(catalogue_event_names())}
    result = runner.validate(frame, f"raw_{source}", parameters, f"{source}_{day.isoformat()}")
    ensure_validation_table(conn)
    record_validation(conn, f"raw/{source}", day, result, run_id)
    return result


def raw_gate_range(conn: psycopg.Connection, runner: GateRunner, reports: list[LoadReport],
                   run_id: str | None) -> GateResult:
    """Validate several loaded days of one source as one batch (backfills: one GX run, not one per
    day); the day window spans the range and the volume band is not applied. Recorded for each day."""
    source = reports[0].source
    first, last = min(r.partition_date for r in reports), max(r.partition_date for r in reports)
    frame = _typed(read_frame(conn, sql.SQL("SELECT * FROM {} WHERE _partition_date BETWEEN %s AND %s").format(
        sql.Identifier("raw", source)), (first, last)), source)
    records = sum(r.records_in_file for r in reports)
    frame["_rejected_share"] = sum(r.rows_rejected for r in reports) / records if records else 0.0
    window = day_parameters(last)
    window["day_start_epoch"] = day_parameters(first)["day_start_epoch"]
    parameters = {**window, **volume_band([]), "max_rejected_share": MAX_REJECTED_SHARE,
                  "event_names": list(catalogue_event_names())}
    result = runner.validate(frame, f"raw_{source}", parameters, f"{source}_{first.isoformat()}_{last.isoformat()}")
    ensure_validation_table(conn)
    for report in reports:
        record_validation(conn, f"raw/{source}", report.partition_date, result, run_id)
    return result


def health_gate(conn: psycopg.Connection, runner: GateRunner, days: list[date], run_id: str | None) -> GateResult:
    """Validate marts.customer_health for ``days`` (one batch) with suite ``customer_health`` and record
    the result for each day. The volume band (trailing 7-day mean of rows per day) applies to one day."""
    first, last = min(days), max(days)
    frame = read_frame(conn, "SELECT * FROM marts.customer_health WHERE as_of_date BETWEEN %s AND %s", (first, last))
    history = [int(r[0]) for r in conn.execute(
        "SELECT count(*) FROM marts.customer_health WHERE as_of_date >= %s AND as_of_date < %s GROUP BY as_of_date",
        (first - timedelta(days=7), first)).fetchall()] if len(days) == 1 else []
    parameters = {**day_parameters(last), **volume_band(history)}
    result = runner.validate(frame, "customer_health", parameters, f"customer_health_{first}_{last}")
    ensure_validation_table(conn)
    for day in days:
        record_validation(conn, "marts/customer_health", day, result, run_id)
    return result


def check_result(check_name: str, results: dict[date, GateResult]) -> dg.AssetCheckResult:
    """One Dagster check result for the days of a run: fails (ERROR) when any day failed a critical
    expectation, fails with WARN when only warnings failed; per-expectation details as metadata."""
    failing_days = {d: r for d, r in results.items() if not r.passed}
    blocking = any(r.blocking_failed for r in results.values())
    shown_day, shown = (next(iter(failing_days.items())) if failing_days else max(results.items(), key=lambda kv: kv[0])) \
        if results else (None, None)
    metadata: dict[str, dg.MetadataValue] = {
        "days_validated": dg.MetadataValue.int(len(results)),
        "days_failed": dg.MetadataValue.text(", ".join(str(d) for d in sorted(failing_days)) or "none"),
    }
    if shown is not None:
        metadata["day_shown"] = dg.MetadataValue.text(str(shown_day))
        metadata["expectations"] = dg.MetadataValue.md(_details_table(shown.details))
        metadata["failed_expectations"] = dg.MetadataValue.json([d for d in shown.details if not d["success"]])
        if shown.docs_path:
            metadata["data_docs"] = dg.MetadataValue.path(shown.docs_path)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not failing_days,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def _details_table(details: list[dict]) -> str:
    return markdown_table([{
        "expectation": d["expectation"], "column": d["column"], "severity": d["severity"],
        "ok": "yes" if d["success"] else "NO",
        "observed": None if d["observed_value"] is None else str(d["observed_value"])[:40],
        "unexpected": d["unexpected_count"],
        "sample": ", ".join(str(v) for v in d["unexpected_sample"])[:60],
    } for d in details], empty="(no expectations)", max_cell=None)
