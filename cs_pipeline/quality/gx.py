"""Great Expectations 1.x quality gates (dagster-ge supports only GX 0.x, so the checks are ours).

Suites are JSON files in ``expectations/`` (``gx.ExpectationSuite(**json.load(f))``). Each expectation has
a GX ``severity``: ``critical`` failures make the gate fail with Dagster severity ERROR (blocking the
partition's downstream assets), ``warning`` failures are reported with severity WARN and block nothing.
Runtime values (the partition's day window as epoch seconds, the event catalogue, the volume band
from the trailing 7-day average, the rejected-share threshold) are suite parameters (``$PARAMETER``).

Every validation runs through a GX checkpoint that updates the HTML Data Docs under
``$CS_PIPELINE_HOME/gx_data_docs`` and is summarised in ``ops.validation_results``.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import perf_counter

import numpy as np
import pandas as pd
import psycopg

from cs_pipeline.core.child_env import set_library_defaults
from cs_pipeline.core.db import ddl_transaction
from cs_pipeline.core.paths import EXPECTATIONS_DIR

set_library_defaults()  # GX analytics off: no network calls

VOLUME_LOW, VOLUME_HIGH = 0.3, 3.0
MAX_REJECTED_SHARE = 0.05
_lock = threading.Lock()


@dataclass
class GateResult:
    """The outcome of one suite on one batch.

    Attributes:
        suite: suite name (file stem in ``expectations/``).
        passed: no expectation failed at all.
        blocking_failed: a ``critical`` expectation failed (Dagster severity ERROR).
        evaluated, failed: expectation counts.
        details: per expectation: type, column, severity, success, observed value, unexpected count and a
            sample of unexpected values.
        docs_path: the Data Docs page of this validation (file path); built only when it failed.
        seconds: wall-clock seconds of the whole gate (reading the batch, the GX run, Data Docs, recording),
            set by ``timed_gate``; 0 when validated without it.
    """

    suite: str
    passed: bool
    blocking_failed: bool
    evaluated: int
    failed: int
    details: list[dict] = field(default_factory=list)
    docs_path: str | None = None
    seconds: float = 0.0

    @property
    def severity(self) -> str:
        return "ERROR" if self.blocking_failed else "WARN"


def load_suite_json(name: str, directory: Path = EXPECTATIONS_DIR) -> dict:
    """The suite ``<directory>/<name>.json`` as a dict.

    Raises:
        FileNotFoundError: no such suite.
    """
    path = directory / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expectation suite not found")
    return json.loads(path.read_text())


def with_epoch_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``<column>_epoch`` (float seconds since 1970, UTC) for every timestamp column, so that day
    windows compare numbers whatever the backend's datetime handling."""
    out = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values) or (
                values.dtype == object and values.notna().any() and isinstance(values.dropna().iloc[0], datetime)):
            stamps = pd.to_datetime(values, utc=True)
            out[f"{column}_epoch"] = (stamps - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
    return out


def day_parameters(day: date, now: datetime | None = None) -> dict[str, float]:
    """``day_start_epoch`` / ``day_end_epoch`` (the UTC day, capped at now) and ``now_epoch``."""
    now = now or datetime.now(UTC)
    start = datetime.combine(day, time(0), tzinfo=UTC)
    end = min(start + timedelta(days=1) - timedelta(microseconds=1), now)
    return {"day_start_epoch": start.timestamp(), "day_end_epoch": end.timestamp(), "now_epoch": now.timestamp()}


@dataclass(frozen=True)
class VolumeBounds:
    """How the row-volume band is set, per suite: the ``volume`` object in the ``meta`` of the suite's
    ``expect_table_row_count_to_be_between`` expectation (every key optional).

    Attributes:
        low, high: the band is [low x baseline, high x baseline] (default 0.3 .. 3.0).
        floor_rows: below this baseline (rows per day) the lower bound is 0 and the upper bound is at
            least ``high x floor_rows``: a small dataset's quiet day is normal, not an outage (default 20).
        min_history_days: fewer trailing days than this: any volume is accepted (default 3).
        trailing_days: days of history looked at (default 28).
        weekday_aware: with at least two trailing days of the same weekday, the baseline is their median
            (weekends differ from weekdays) (default true).
    """

    low: float = VOLUME_LOW
    high: float = VOLUME_HIGH
    floor_rows: int = 20
    min_history_days: int = 3
    trailing_days: int = 28
    weekday_aware: bool = True


def volume_bounds(suite: str | None, directory: Path = EXPECTATIONS_DIR) -> VolumeBounds:
    """The ``VolumeBounds`` configured in suite ``suite`` (defaults when none, or no such suite)."""
    if suite is None:
        return VolumeBounds()
    try:
        data = load_suite_json(suite, directory)
    except FileNotFoundError:
        return VolumeBounds()
    for expectation in data.get("expectations", []):
        if expectation.get("type") == "expect_table_row_count_to_be_between":
            config = (expectation.get("meta") or {}).get("volume") or {}
            return VolumeBounds(**config)
    return VolumeBounds()


def volume_band(history: list[int] | list[tuple[date, int]], day: date | None = None,
                bounds: VolumeBounds | None = None) -> dict[str, float]:
    """``min_rows`` / ``max_rows`` for a day from the trailing days' row counts: a robust baseline (the
    median, so one outage or spike in the history does not move it), the median of the same weekday
    when ``day`` and dated history (``(day, rows)`` pairs) give at least two of them, then the band
    ``bounds.low``..``bounds.high`` x baseline, with no lower bound while the baseline is under
    ``bounds.floor_rows``. Too little history (``bounds.min_history_days``): any volume is accepted."""
    bounds = bounds or VolumeBounds()
    dated = [h for h in history if isinstance(h, tuple)]
    counts = [int(h[1]) if isinstance(h, tuple) else int(h) for h in history]
    if len(counts) < max(1, bounds.min_history_days):
        return {"min_rows": 0, "max_rows": 10**12}
    baseline = float(np.median(counts))
    if bounds.weekday_aware and day is not None and dated:
        same = [int(n) for d, n in dated if d.weekday() == day.weekday()]
        if len(same) >= 2:
            baseline = float(np.median(same))
    if baseline < bounds.floor_rows:
        return {"min_rows": 0, "max_rows": int(np.ceil(max(baseline, bounds.floor_rows) * bounds.high)) + 1}
    return {"min_rows": int(baseline * bounds.low), "max_rows": int(np.ceil(baseline * bounds.high)) + 1}


def trailing_daily_volumes(conn: psycopg.Connection, source: str, day: date, days: int = 28) -> list[tuple[date, int]]:
    """``(day, rows loaded)`` of ``source`` on the ``days`` days before ``day`` that were loaded
    (``ops.load_audit``), oldest first."""
    rows = conn.execute("SELECT partition_date, rows_loaded FROM ops.load_audit WHERE source = %s "
                        "AND partition_date >= %s AND partition_date < %s ORDER BY partition_date",
                        (source, day - timedelta(days=days), day)).fetchall()
    return [(r[0], int(r[1])) for r in rows]


def raw_volume_band(conn: psycopg.Connection, source: str, day: date) -> dict[str, float]:
    """The volume band of raw source ``source`` on ``day``, with the bounds of suite ``raw_<source>``."""
    bounds = volume_bounds(f"raw_{source}")
    return volume_band(trailing_daily_volumes(conn, source, day, bounds.trailing_days), day, bounds)


class GateRunner:
    """Runs suites (``<suites_dir>/<name>.json``) with one ephemeral GX context (and its Data Docs site) per
    process."""

    def __init__(self, docs_dir: Path, suites_dir: Path = EXPECTATIONS_DIR):
        self.docs_dir = docs_dir
        self.suites_dir = suites_dir
        self._context = None
        self._count = 0

    def _ctx(self):
        if self._context is None:
            import great_expectations as gx

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
            ctx.add_data_docs_site(site_name="cs_pipeline", site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })
            self._datasource = ctx.data_sources.add_pandas("cs_pipeline")
            self._context = ctx
        return self._context

    def validate(self, frame: pd.DataFrame, suite_name: str, parameters: dict, batch_label: str) -> GateResult:
        """Validate ``frame`` with suite ``suite_name`` and ``parameters``; build Data Docs."""
        import great_expectations as gx

        with _lock:
            ctx = self._ctx()
            self._count += 1
            run_name = f"{suite_name}__{batch_label}__{self._count}".replace("/", "_")
            suite_json = load_suite_json(suite_name, self.suites_dir)
            suite_json["name"] = run_name
            try:
                ctx.suites.delete(run_name)
            except Exception:  # not there yet
                pass
            suite = ctx.suites.add(gx.ExpectationSuite(**suite_json))
            asset = self._datasource.add_dataframe_asset(run_name)
            batch_definition = asset.add_batch_definition_whole_dataframe("batch")
            validation = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=run_name, data=batch_definition, suite=suite))
            batch = {"dataframe": with_epoch_columns(frame)}
            # Data Docs only for a batch that failed: rendering the site took 0.56 s per validation,
            # five times per daily run (issue 18), for pages of passing batches nobody opens. A failed
            # batch is validated again with the docs action (failures are rare; the result is the same).
            checkpoint = ctx.checkpoints.add(gx.Checkpoint(name=run_name, validation_definitions=[validation]))
            result = checkpoint.run(batch_parameters=batch, expectation_parameters=parameters)
            ctx.checkpoints.delete(run_name)
            if not result.success:
                checkpoint = ctx.checkpoints.add(gx.Checkpoint(
                    name=run_name, validation_definitions=[validation],
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["cs_pipeline"])]))
                result = checkpoint.run(batch_parameters=batch, expectation_parameters=parameters)
                ctx.checkpoints.delete(run_name)
            [validation_result] = list(result.run_results.values())
            ctx.validation_definitions.delete(run_name)
            self._datasource.delete_asset(run_name)
        details = []
        for r in validation_result.results:
            cfg = r.expectation_config
            res = r.result or {}
            details.append({
                "expectation": cfg.type, "column": cfg.kwargs.get("column"), "severity": str(cfg.severity.value),
                "success": bool(r.success), "observed_value": _plain(res.get("observed_value")),
                "unexpected_count": res.get("unexpected_count"),
                "unexpected_sample": [_plain(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
            })
        failed = [d for d in details if not d["success"]]
        docs = sorted(self.docs_dir.glob(f"validations/{run_name}/**/*.html")) if failed else []
        return GateResult(suite=suite_name, passed=not failed,
                          blocking_failed=any(d["severity"] == "critical" for d in failed),
                          evaluated=len(details), failed=len(failed), details=details,
                          docs_path=str(docs[-1]) if docs else None)


def timed_gate(gate: Callable[..., GateResult]) -> Callable[..., GateResult]:
    """Decorate a gate function (one that reads a batch, validates it and records the result) so that its
    ``GateResult.seconds`` holds its wall-clock time; reported as the checks' ``gate_seconds`` (issue 18)."""

    @functools.wraps(gate)
    def wrapper(*args, **kwargs) -> GateResult:
        started = perf_counter()
        result = gate(*args, **kwargs)
        result.seconds = perf_counter() - started
        return result

    return wrapper


def _plain(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return str(value)
    return value


def ensure_validation_table(conn: psycopg.Connection) -> None:
    """Create ``ops.validation_results`` (one summary row per validation)."""
    with ddl_transaction(conn):
        conn.execute("""
            CREATE TABLE IF NOT EXISTS ops.validation_results (
              validation_id bigserial PRIMARY KEY,
              asset text NOT NULL,
              partition_date date,
              suite text NOT NULL,
              passed boolean NOT NULL,
              blocking_failed boolean NOT NULL,
              evaluated integer NOT NULL,
              failed integer NOT NULL,
              details jsonb NOT NULL,
              docs_path text,
              run_id text,
              validated_at timestamptz NOT NULL DEFAULT now()
            )""")
        conn.execute("CREATE INDEX IF NOT EXISTS validation_results_asset_day_idx "
                     "ON ops.validation_results (asset, partition_date, validated_at)")


def record_validation(conn: psycopg.Connection, asset: str, day: date | None, result: GateResult,
                      run_id: str | None) -> None:
    """Append the summary row of ``result``."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO ops.validation_results (asset, partition_date, suite, passed, blocking_failed, evaluated, "
            "failed, details, docs_path, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (asset, day, result.suite, result.passed, result.blocking_failed, result.evaluated, result.failed,
             json.dumps(result.details, default=str), result.docs_path, run_id))


def gate_failed(conn: psycopg.Connection, asset: str, day: date) -> bool:
    """True when the newest validation of ``asset`` for ``day`` failed a critical expectation."""
    row = conn.execute("SELECT blocking_failed FROM ops.validation_results WHERE asset = %s AND partition_date = %s "
                       "ORDER BY validated_at DESC, validation_id DESC LIMIT 1", (asset, day)).fetchone() \
        if conn.execute("SELECT to_regclass('ops.validation_results') IS NOT NULL").fetchone()[0] else None
    return bool(row and row[0])
