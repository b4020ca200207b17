"""Reading the marts the health stage needs and writing its tables (psycopg 3, COPY, one transaction
per write). The logic lives in ``scoring``, ``milestones`` and ``backtest``; this module only moves data.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.core.db import (
    copy_frame,
    ddl_transaction,
    read_frame,
    read_frame_copy,
    relation_exists,
    statistics_stale,
)

HEALTH_COLUMNS = [
    "supplier_id", "as_of_date", "vendor_category", "tier", "lifecycle_stage", "health_score", "risk_level",
    "previous_risk_level", "score_delta_7d", "score_delta_30d", "trend", "engagement_score",
    "churn_risk_score", "drivers", "missing_components", "components", "segment", "scored",
    "scorecard_version", "calculated_at", "churn_probability", "churn_model_version", "churn_probability_7d_ago",
]

DDL = [
    """
    CREATE TABLE IF NOT EXISTS marts.customer_health (
      supplier_id text NOT NULL,
      as_of_date date NOT NULL,
      vendor_category text,
      tier text,
      lifecycle_stage text,
      health_score numeric(5, 2),
      risk_level text CHECK (risk_level IN ('healthy', 'at_risk', 'critical')),
      previous_risk_level text,
      score_delta_7d numeric(6, 2),
      score_delta_30d numeric(6, 2),
      trend text CHECK (trend IN ('improving', 'stable', 'declining')),
      engagement_score numeric(5, 2),
      churn_risk_score numeric(5, 2),
      drivers text,
      missing_components text,
      components jsonb NOT NULL,
      segment text NOT NULL,
      scored boolean NOT NULL,
      scorecard_version text NOT NULL,
      calculated_at timestamptz NOT NULL,
      PRIMARY KEY (as_of_date, supplier_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS customer_health_supplier_idx ON marts.customer_health (supplier_id, as_of_date)",
    "CREATE INDEX IF NOT EXISTS customer_health_risk_idx ON marts.customer_health (as_of_date, risk_level)",
    """
    CREATE TABLE IF NOT EXISTS marts.success_milestones (
      supplier_id text NOT NULL,
      milestone_type text NOT NULL,
      category text NOT NULL,
      achieved_at date NOT NULL,
      celebrated boolean NOT NULL DEFAULT false,
      celebrated_at timestamptz,
      recorded_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (supplier_id, milestone_type)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS marts.health_score_backtest (
      scorecard_version text NOT NULL,
      evaluated_at timestamptz NOT NULL,
      first_day date,
      last_day date,
      horizon_days integer NOT NULL,
      observations integer NOT NULL,
      churners integer NOT NULL,
      auc numeric(6, 4),
      churn_rate numeric(6, 4),
      critical_lift numeric(8, 3),
      churn_rate_by_level jsonb NOT NULL,
      calibration jsonb NOT NULL,
      PRIMARY KEY (scorecard_version, evaluated_at)
    )
    """,
]


ADDED_COLUMNS = [
    # Issue 13: the churn label and the further backtest metrics.
    ("health_score_backtest", "churn_kind", "text NOT NULL DEFAULT 'cancellation'"),
    ("health_score_backtest", "pr_auc", "numeric(6, 4)"),
    ("health_score_backtest", "top_decile_lift", "numeric(8, 3)"),
    ("health_score_backtest", "brier", "numeric(6, 4)"),
    # Issue 26: the churn model beside the scorecards (its validation row, AUC interval) and its probability.
    ("health_score_backtest", "kind", "text NOT NULL DEFAULT 'scorecard'"),
    ("health_score_backtest", "auc_ci_low", "numeric(6, 4)"),
    ("health_score_backtest", "auc_ci_high", "numeric(6, 4)"),
    ("customer_health", "churn_probability", "numeric(5, 4)"),
    ("customer_health", "churn_model_version", "text"),
    # Issue 26 item 6: the same model's probability 7 days earlier (the playbook's rise_7d).
    ("customer_health", "churn_probability_7d_ago", "numeric(5, 4)"),
    # Issue 28: a celebrated milestone the data no longer supports is kept, retracted (not deleted).
    ("success_milestones", "retracted_at", "timestamptz"),
]
"""Columns added to the marts after their first release: (table in marts, column, type). Added only when
missing: ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` takes an ACCESS EXCLUSIVE lock even when the column
exists, so every run would wait for any open transaction that read the table."""


def read_activity_days(conn: psycopg.Connection, first: date, last: date, events: list[str] | None = None) -> pd.DataFrame:
    """Days with activity in [first, last]: ``supplier_id``, ``activity_date`` (any event from
    marts.fct_supplier_activity_daily, or only ``events`` by name from the staged activity events)."""
    if events is None:
        return read_frame(conn, "SELECT supplier_id, activity_date FROM marts.fct_supplier_activity_daily "
                                "WHERE activity_date BETWEEN %s AND %s AND events_total > 0", (first, last))
    return read_frame(conn, "SELECT DISTINCT supplier_id, event_date AS activity_date FROM staging.stg_wedsync__activity_events "
                            "WHERE event_date BETWEEN %s AND %s AND event_name = ANY(%s)", (first, last, events))


def ensure_health_tables(conn: psycopg.Connection) -> None:
    """Create marts.customer_health, marts.success_milestones and marts.health_score_backtest."""
    with ddl_transaction(conn):
        conn.execute("CREATE SCHEMA IF NOT EXISTS marts")
        for statement in DDL:
            conn.execute(statement)
        present = set(conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                                   "WHERE table_schema = 'marts'").fetchall())
        for table, column, kind in ADDED_COLUMNS:
            if (table, column) not in present:
                conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    sql.Identifier("marts", table), sql.Identifier(column), sql.SQL(kind)))


def read_engagement(conn: psycopg.Connection, first: date, last: date, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of marts.supplier_engagement_daily with as_of_date in [first, last] (UTC days), ordered by day and
    supplier, as ``read_frame`` types them (read through COPY: ``read_frame_copy``)."""
    cols = sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))
    return read_frame_copy(conn, sql.SQL(
        "SELECT {} FROM marts.supplier_engagement_daily WHERE as_of_date BETWEEN %s AND %s "
        "ORDER BY as_of_date, supplier_id").format(cols), (first, last))


def read_seasonal_sums(conn: psycopg.Connection, first: date, last: date, metrics: list[str]) -> pd.DataFrame:
    """``seasonal_sums`` of marts.supplier_engagement_daily over as_of_date in [first, last], aggregated in
    PostgreSQL: a few hundred rows whatever the history (issue 18: reading two years of rows into pandas
    cost seconds and gigabytes per run at 10,000 suppliers). Columns: ``vendor_category``, ``month``
    (int 1-12), ``<metric>__sum`` (float), ``<metric>__count`` (int)."""
    parts = [sql.SQL("sum({m})::float8 AS {s}, count({m}) AS {c}").format(
        m=sql.Identifier(m), s=sql.Identifier(f"{m}__sum"), c=sql.Identifier(f"{m}__count")) for m in metrics]
    return read_frame(conn, sql.SQL(
        "SELECT vendor_category, extract(month FROM as_of_date)::int AS month, {} "
        "FROM marts.supplier_engagement_daily WHERE as_of_date BETWEEN %s AND %s "
        "AND vendor_category IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2").format(sql.SQL(", ").join(parts)),
        (first, last))


def read_health_history(conn: psycopg.Connection, days: list[date]) -> pd.DataFrame:
    """Stored (supplier_id, as_of_date, health_score, risk_level) of ``days`` (UTC; ``drivers.history_days``),
    read with ``read_frame_copy``."""
    return read_frame_copy(conn, "SELECT supplier_id, as_of_date, health_score::float8 AS health_score, risk_level "
                                 "FROM marts.customer_health WHERE as_of_date = ANY(%s)", (list(days),))


def read_calibrations(conn: psycopg.Connection, scorecard_version: str) -> pd.DataFrame:
    """Every backtest of a scorecard version (kind ``scorecard``): ``last_day`` (date), ``horizon_days``
    (int), ``evaluated_at`` (timestamptz), ``calibration`` (dict, {} when uncalibrated); empty when none.
    ``known_by.churn_risk_as_of`` chooses the one each day may use."""
    columns = ["last_day", "horizon_days", "evaluated_at", "calibration"]
    if not relation_exists(conn, "marts.health_score_backtest"):
        return pd.DataFrame(columns=columns)
    return read_frame(conn, "SELECT last_day, horizon_days, evaluated_at, calibration FROM marts.health_score_backtest "
                            "WHERE scorecard_version = %s AND kind = 'scorecard' AND last_day IS NOT NULL "
                            "ORDER BY evaluated_at", (scorecard_version,))


def read_churn_models(conn: psycopg.Connection) -> pd.DataFrame:
    """``version``, ``training_as_of`` (date), ``trained_at`` of every row of ops.churn_models (empty when
    none); ``known_by.models_by_day`` chooses the one that scores each day."""
    if not relation_exists(conn, "ops.churn_models"):
        return pd.DataFrame(columns=["version", "training_as_of", "trained_at"])
    return read_frame(conn, "SELECT version, training_as_of, trained_at FROM ops.churn_models ORDER BY trained_at")


def _json_numbers(values: np.ndarray) -> np.ndarray:
    """JSON numbers rounded to 4 decimals (``null`` for NaN), as strings: numpy's shortest round-trip
    form, which is Python's ``repr`` of the float."""
    text = np.round(values, 4).astype(str)
    return np.where(np.isnan(values), "null", text).astype(object)


def components_json(scores: pd.DataFrame, names: list[str]) -> list[str]:
    """Per row, the JSON object {component: {points, max_points, metric, missing}} (numbers rounded to 4
    decimals, null when missing), in ``names`` order.

    Built column-wise (issue 18: one ``json.dumps`` per row took 10 s of every 31-day window of 10,000
    suppliers; this takes well under one)."""
    if not len(scores):
        return []
    rows = None
    for name in names:
        points = scores[f"{name}_points"].to_numpy(dtype=float)
        max_points = scores[f"{name}_max_points"].to_numpy(dtype=float)
        metric = pd.to_numeric(scores[f"{name}_metric"], errors="coerce").to_numpy(dtype=float)
        missing = np.where((max_points > 0) & np.isnan(points), "true", "false").astype(object)
        part = (json.dumps(name) + ': {"points": ' + _json_numbers(points) + ', "max_points": '
                + _json_numbers(max_points) + ', "metric": ' + _json_numbers(metric) + ', "missing": ' + missing + "}")
        rows = part if rows is None else rows + ", " + part
    if rows is None:
        return ["{}"] * len(scores)
    return list("{" + rows + "}")


def write_health(conn: psycopg.Connection, frame: pd.DataFrame, days: list[date]) -> int:
    """Replace the rows of ``days`` in marts.customer_health with ``frame`` (HEALTH_COLUMNS), in one
    transaction (DELETE + COPY). Returns the rows written."""
    with conn.transaction():
        conn.execute("DELETE FROM marts.customer_health WHERE as_of_date = ANY(%s)", (days,))
        written = copy_frame(conn, ("marts", "customer_health"), frame, HEALTH_COLUMNS)
        stale = statistics_stale(conn, "marts.customer_health")
        if stale:  # publish this write's counts at the commit, so that the ANALYZE below clears them
            conn.execute("SELECT pg_stat_force_next_flush()")
    if stale:  # fresh statistics for the sensor's queries (issue 18), after the commit
        with conn.transaction():
            conn.execute("ANALYZE marts.customer_health")
    return written


def backtest_inputs(conn: psycopg.Connection, scorecard, until: date, every_days: int = 7):
    """What a backtest or a fit of ``scorecard`` needs from the warehouse, using only history up to
    ``until`` (UTC day): the engagement rows of as-of days every ``every_days`` days counted back from
    ``until - horizon_days`` (so each label's horizon ends by ``until``), their churn labels (the
    scorecard's ``churn`` block) and the seasonal index (None when the scorecard has no seasonal
    component).

    Returns:
        (engagement DataFrame, labels bool ndarray, seasonal DataFrame | None); an empty engagement
        when the history is shorter than the horizon.
    """
    from datetime import timedelta

    from cs_pipeline.health.backtest import label_churn
    from cs_pipeline.health.seasonal import daily_seasonal_sums, point_in_time_index

    first = conn.execute("SELECT min(as_of_date) FROM marts.supplier_engagement_daily").fetchone()[0]
    horizon = scorecard.churn.horizon_days
    last_as_of = until - timedelta(days=horizon)
    if first is None or last_as_of < first:
        return pd.DataFrame(), np.zeros(0, dtype=bool), None
    history = read_engagement(conn, first, until)
    days = pd.to_datetime(history["as_of_date"])
    keep = (days.dt.date <= last_as_of) & (((days - pd.Timestamp(last_as_of)).dt.days % every_days) == 0)
    engagement = history.loc[keep].reset_index(drop=True)
    churn_dates = activity = None
    if scorecard.churn.kind == "cancellation":
        churn = read_frame(conn, "SELECT supplier_id, cancelled_date FROM marts.dim_suppliers WHERE cancelled_date <= %s",
                           (until,))
        churn_dates = pd.Series(pd.to_datetime(churn["cancelled_date"]).to_numpy(), index=churn["supplier_id"].to_numpy())
    else:
        activity = read_activity_days(conn, first, until, scorecard.churn.events)
    labels = label_churn(engagement, scorecard.churn, churn_dates, activity)
    metrics = scorecard.seasonal_metrics
    # Each as-of day with the seasonal index of the history before it (issue 28).
    seasonal = point_in_time_index(daily_seasonal_sums(history, metrics), sorted(set(pd.to_datetime(engagement["as_of_date"]).dt.date)),
                                   metrics, scorecard.seasonality) if metrics and scorecard.seasonality.enabled else None
    return engagement, labels, seasonal
