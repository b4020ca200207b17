"""The ingest stage's quality gates: the loaded raw partitions checked by the Great Expectations suites
``expectations/raw_<source>.json`` (through ``cs_pipeline.quality``), with the day's parameters."""

from __future__ import annotations

import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.ingest.loader import LoadReport
from cs_pipeline.ingest.sources import catalogue_event_names, sources
from cs_pipeline.ingest.tables import partition_table_name
from cs_pipeline.quality.batch import read_gate_batch
from cs_pipeline.quality.gx import (
    MAX_REJECTED_SHARE,
    GateResult,
    GateRunner,
    day_parameters,
    ensure_validation_table,
    raw_volume_band,
    record_validation,
    timed_gate,
    volume_band,
)


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


@timed_gate
def raw_gate(conn: psycopg.Connection, runner: GateRunner, report: LoadReport, run_id: str | None) -> GateResult:
    """Validate the loaded partition of ``report`` with suite ``raw_<source>`` and record the result."""
    source, day = report.source, report.partition_date
    frame = _typed(read_gate_batch(conn, f"raw_{source}", "raw", partition_table_name(source, day), sql.SQL("true"),
                                   directory=runner.suites_dir), source)
    share = report.rows_rejected / report.records_in_file if report.records_in_file else 0.0
    frame["_rejected_share"] = share
    parameters = {**day_parameters(day), **raw_volume_band(conn, source, day),
                  "max_rejected_share": MAX_REJECTED_SHARE, "event_names": list(catalogue_event_names())}
    result = runner.validate(frame, f"raw_{source}", parameters, f"{source}_{day.isoformat()}")
    ensure_validation_table(conn)
    record_validation(conn, f"raw/{source}", day, result, run_id)
    return result


@timed_gate
def raw_gate_range(conn: psycopg.Connection, runner: GateRunner, reports: list[LoadReport],
                   run_id: str | None) -> GateResult:
    """Validate several loaded days of one source as one batch (backfills: one GX run, not one per
    day); the day window spans the range and the volume band is not applied. Recorded for each day."""
    source = reports[0].source
    first, last = min(r.partition_date for r in reports), max(r.partition_date for r in reports)
    frame = _typed(read_gate_batch(conn, f"raw_{source}", "raw", source,
                                   sql.SQL("_partition_date BETWEEN %s AND %s"), (first, last),
                                   directory=runner.suites_dir), source)
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
