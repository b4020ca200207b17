"""What the dashboard shows: thin queries on the marts (``read_*``) and pure functions that shape them.

Every ``read_*`` function takes a psycopg connection of the BI role and reads only schema ``marts``; a
missing table gives an empty DataFrame with the documented columns (the page then says what to run),
never an exception. Scores are points 0-100, days are UTC calendar days, MRR is in the supplier's currency
as the billing source reports it (monthly, not converted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.numeric import FloatLoader

RISK_LEVELS = ("healthy", "at_risk", "critical")
#: Grid colours per risk level (green / yellow / red; grey when a supplier could not be scored).
RISK_COLOURS = {"healthy": "#2e7d32", "at_risk": "#f9a825", "critical": "#c62828", "unscored": "#9e9e9e"}
RISK_BACKGROUNDS = {"healthy": "#c8e6c9", "at_risk": "#fff59d", "critical": "#ffcdd2", "unscored": "#eeeeee"}
NO_SCORES = "no health scores yet: run cs-pipeline demo (or cs-pipeline run --start ... for your own data)"
STALE_AFTER_DAYS = 2

GRID_COLUMNS = ["supplier_id", "health_score", "risk_level", "trend", "score_delta_7d",
                "last_activity", "tier", "vendor_category", "lifecycle_stage", "mrr", "drivers"]


@dataclass(frozen=True)
class MartsStatus:
    """Which marts exist and which days ``marts.customer_health`` holds.

    Attributes:
        present: qualified names of the marts tables/views that exist and the role may read.
        first_day, last_day: the oldest and newest ``as_of_date`` of customer_health (None when empty).
    """

    present: frozenset[str]
    first_day: date | None
    last_day: date | None

    @property
    def has_scores(self) -> bool:
        """True when customer_health exists and holds at least one day."""
        return self.last_day is not None

    def stale_days(self, today: date) -> int:
        """Days between ``today`` and the newest scored day (0 when scored yesterday or later); needs scores."""
        return max((today - self.last_day).days - 1, 0)


def _frame(conn: psycopg.Connection, query: str, params: tuple = ()) -> pd.DataFrame:
    cur = conn.cursor()
    cur.adapters.register_loader("numeric", FloatLoader)
    cur.execute(query, params)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


MARTS = ("marts.customer_health", "marts.dim_suppliers", "marts.supplier_engagement_daily",
         "marts.success_milestones", "marts.health_score_backtest", "marts.intervention_outcomes",
         "marts.dashboard_interventions", "marts.dashboard_call_tasks")


def marts_status(conn: psycopg.Connection) -> MartsStatus:
    """Which of ``MARTS`` exist (and are readable), and the day range of customer_health."""
    present = {name for name in MARTS
               if conn.execute("SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(to_regclass(%s), 'SELECT')",
                               (name, name)).fetchone()[0]}
    first = last = None
    if "marts.customer_health" in present:
        first, last = conn.execute("SELECT min(as_of_date), max(as_of_date) FROM marts.customer_health").fetchone()
    return MartsStatus(frozenset(present), first, last)


HEALTH_DAY_SQL = """
SELECT h.supplier_id, h.health_score, coalesce(h.risk_level, 'unscored') AS risk_level, h.trend,
       h.score_delta_7d, h.score_delta_30d, e.last_login_date AS last_activity, h.tier, h.vendor_category,
       h.lifecycle_stage, e.mrr, h.drivers, h.missing_components, h.scorecard_version, h.as_of_date
FROM marts.customer_health h
LEFT JOIN marts.supplier_engagement_daily e ON e.supplier_id = h.supplier_id AND e.as_of_date = h.as_of_date
WHERE h.as_of_date = %s
ORDER BY h.health_score NULLS LAST, h.supplier_id
"""


def read_health_day(conn: psycopg.Connection, status: MartsStatus, day: date) -> pd.DataFrame:
    """The day's customer_health rows with MRR and last activity (``GRID_COLUMNS`` plus
    score_delta_30d, missing_components, scorecard_version, as_of_date); risk_level 'unscored' when none."""
    if "marts.customer_health" not in status.present:
        return pd.DataFrame(columns=GRID_COLUMNS)
    query = HEALTH_DAY_SQL
    if "marts.supplier_engagement_daily" not in status.present:
        query = query.replace("e.last_login_date", "NULL::date").replace("e.mrr", "NULL::numeric AS mrr").replace(
            "LEFT JOIN marts.supplier_engagement_daily e ON e.supplier_id = h.supplier_id AND e.as_of_date = h.as_of_date", "")
    return _frame(conn, query, (day,))


def read_risk_mix(conn: psycopg.Connection, first: date, last: date) -> pd.DataFrame:
    """Suppliers per day and risk level in [first, last]: as_of_date, risk_level, suppliers (int)."""
    return _frame(conn, "SELECT as_of_date, coalesce(risk_level, 'unscored') AS risk_level, count(*)::int AS suppliers "
                        "FROM marts.customer_health WHERE as_of_date BETWEEN %s AND %s GROUP BY 1, 2 ORDER BY 1, 2",
                  (first, last))


def read_supplier_history(conn: psycopg.Connection, supplier_id: str) -> pd.DataFrame:
    """One supplier's scores over time: as_of_date, health_score, risk_level, trend, drivers,
    components (dict name -> {points, max_points, metric, missing}), scorecard_version."""
    return _frame(conn, "SELECT as_of_date, health_score, coalesce(risk_level, 'unscored') AS risk_level, trend, "
                        "drivers, components, scorecard_version FROM marts.customer_health WHERE supplier_id = %s "
                        "ORDER BY as_of_date", (supplier_id,))


def read_milestones(conn: psycopg.Connection, status: MartsStatus, supplier_id: str) -> pd.DataFrame:
    """Milestones a supplier reached: milestone_type, category, achieved_at (date), celebrated (bool),
    retracted_at (timestamp; None while the data supports it, and on a warehouse from before issue 28)."""
    columns = ["milestone_type", "category", "achieved_at", "celebrated", "retracted_at"]
    if "marts.success_milestones" not in status.present:
        return pd.DataFrame(columns=columns)
    return _frame(conn, "SELECT milestone_type, category, achieved_at, celebrated, "
                        "(to_jsonb(m) ->> 'retracted_at')::timestamptz AS retracted_at "
                        "FROM marts.success_milestones m WHERE supplier_id = %s ORDER BY achieved_at, milestone_type",
                  (supplier_id,))


def read_signup_date(conn: psycopg.Connection, status: MartsStatus, supplier_id: str) -> date | None:
    """The supplier's signup day (marts.dim_suppliers), None when unknown."""
    if "marts.dim_suppliers" not in status.present:
        return None
    row = conn.execute("SELECT signup_date FROM marts.dim_suppliers WHERE supplier_id = %s LIMIT 1",
                       (supplier_id,)).fetchone()
    return row[0] if row else None


def read_supplier_interventions(conn: psycopg.Connection, status: MartsStatus, supplier_id: str) -> pd.DataFrame:
    """A supplier's interventions, newest first, with their outcome when known: as_of_date, rule, channel,
    status, reason, health_score (at trigger), health_30d, recovered (bool or None)."""
    if "marts.dashboard_interventions" in status.present:
        outcome = ("LEFT JOIN marts.intervention_outcomes o USING (intervention_id)"
                   if "marts.intervention_outcomes" in status.present else
                   "LEFT JOIN (SELECT NULL::bigint AS intervention_id, NULL::numeric AS health_30d, "
                   "NULL::boolean AS recovered) o USING (intervention_id)")
        return _frame(conn, f"SELECT i.as_of_date, i.rule, i.channel, i.status, i.reason, i.health_score, "
                            f"o.health_30d, o.recovered FROM marts.dashboard_interventions i {outcome} "
                            f"WHERE i.supplier_id = %s ORDER BY i.as_of_date DESC, i.rule", (supplier_id,))
    if "marts.intervention_outcomes" in status.present:
        return _frame(conn, "SELECT as_of_date, rule, channel, status, reason, health_at_trigger AS health_score, "
                            "health_30d, recovered FROM marts.intervention_outcomes WHERE supplier_id = %s "
                            "ORDER BY as_of_date DESC, rule", (supplier_id,))
    return pd.DataFrame(columns=["as_of_date", "rule", "channel", "status", "reason", "health_score",
                                 "health_30d", "recovered"])


def read_intervention_counts(conn: psycopg.Connection, status: MartsStatus) -> pd.DataFrame:
    """Interventions by rule, channel and status (sent / suppressed / failed / planned) with the reason:
    rule, channel, status, reason ('' when none), interventions (int)."""
    if "marts.dashboard_interventions" not in status.present:
        return pd.DataFrame(columns=["rule", "channel", "status", "reason", "interventions"])
    return _frame(conn, "SELECT rule, channel, status, coalesce(reason, '') AS reason, count(*)::int AS interventions "
                        "FROM marts.dashboard_interventions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")


def read_call_tasks_due(conn: psycopg.Connection, status: MartsStatus, day: date) -> pd.DataFrame:
    """Open call tasks scheduled on or before ``day``: supplier_id, interaction_type, scheduled_for, rule."""
    if "marts.dashboard_call_tasks" not in status.present:
        return pd.DataFrame(columns=["supplier_id", "interaction_type", "scheduled_for", "rule"])
    join = ("LEFT JOIN marts.dashboard_interventions i USING (intervention_id, supplier_id)"
            if "marts.dashboard_interventions" in status.present else
            "LEFT JOIN (SELECT NULL::bigint AS intervention_id, NULL::text AS supplier_id, NULL::text AS rule) i "
            "USING (intervention_id, supplier_id)")
    return _frame(conn, f"SELECT t.supplier_id, t.interaction_type, t.scheduled_for, i.rule "
                        f"FROM marts.dashboard_call_tasks t {join} "
                        f"WHERE t.completed_at IS NULL AND t.scheduled_for <= %s ORDER BY t.scheduled_for, t.supplier_id",
                  (day,))


#: Columns of marts.intervention_outcomes the Interventions page reads (``outcomes.OUTCOME_INPUT_COLUMNS``).
OUTCOME_COLUMNS = ["intervention_id", "supplier_id", "rule", "channel", "audience", "as_of_date", "status", "reason",
                   "health_at_trigger", "health_outcome", "churned", "contaminated"]


def read_outcomes(conn: psycopg.Connection, status: MartsStatus) -> pd.DataFrame:
    """Rows of marts.intervention_outcomes (``OUTCOME_COLUMNS``; scores float points, ``churned`` and
    ``contaminated`` booleans). Empty with those columns when the table is missing or from an older version."""
    if "marts.intervention_outcomes" not in status.present:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    present = set(_frame(conn, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'marts' "
                               "AND table_name = 'intervention_outcomes'")["column_name"])
    if not set(OUTCOME_COLUMNS) <= present:  # written before issue 27: no intention-to-treat columns yet
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    frame = _frame(conn, "SELECT intervention_id, supplier_id, rule, channel, audience, as_of_date, status, reason, "
                         "health_at_trigger::float8 AS health_at_trigger, health_outcome::float8 AS health_outcome, "
                         "churned, contaminated FROM marts.intervention_outcomes")
    return frame


BACKTEST_COLUMNS = ["scorecard_version", "kind", "evaluated_at", "first_day", "last_day", "observations", "churners",
                    "auc", "auc_ci_low", "auc_ci_high", "top_decile_lift", "brier", "churn_rate", "critical_lift",
                    "churn_rate_by_level", "calibration"]


def read_backtest(conn: psycopg.Connection, status: MartsStatus) -> pd.DataFrame:
    """The newest backtest per scorecard version, and each churn model's validation row (issue 26) beside
    them: ``BACKTEST_COLUMNS`` (``kind`` scorecard / model; the AUC interval, lift and Brier score where
    known; churn_rate_by_level and calibration as dicts). A warehouse from before issue 26 reads too."""
    if "marts.health_score_backtest" not in status.present:
        return pd.DataFrame(columns=["scorecard_version", "kind", "auc", "churn_rate_by_level", "calibration"])
    frame = _frame(conn, "SELECT DISTINCT ON (scorecard_version) * FROM marts.health_score_backtest "
                         "ORDER BY scorecard_version, evaluated_at DESC")
    if "kind" not in frame:
        frame["kind"] = "scorecard"
    return frame.reindex(columns=BACKTEST_COLUMNS).sort_values(["kind", "scorecard_version"], ascending=[False, True]) \
        .reset_index(drop=True)


def model_calibration_frame(backtest: pd.DataFrame) -> pd.DataFrame:
    """A churn model's calibration curve per version: scorecard_version (the model's version), decile (1-10),
    predicted and observed churn rate (0..1) on its validation rows."""
    models = backtest.loc[backtest["kind"] == "model"]
    rows = [(version, int(key.split()[-1]), float(v["predicted"]), float(v["observed"]))
            for version, cal in zip(models["scorecard_version"], models["calibration"])
            for key, v in _components(cal).items() if isinstance(v, dict)]
    return pd.DataFrame(rows, columns=["scorecard_version", "decile", "predicted", "observed"])


# ---------------------------------------------------------------------------------------------- pure shaping


def filter_grid(health: pd.DataFrame, levels: list[str] | None = None, tiers: list[str] | None = None,
                categories: list[str] | None = None, stages: list[str] | None = None,
                search: str = "") -> pd.DataFrame:
    """The rows of ``health`` (``read_health_day``) matching every given filter, in ``GRID_COLUMNS`` order.

    An empty or None list means "no filter on that column". ``search`` matches supplier_id,
    case-insensitive, as a plain substring (not a pattern). The marts hold no personal data (WS-168 BI
    path, issue 12), so there is no business name to search: CSMs search by account id.
    """
    mask = pd.Series(True, index=health.index)
    for column, chosen in (("risk_level", levels), ("tier", tiers), ("vendor_category", categories),
                           ("lifecycle_stage", stages)):
        if chosen:
            mask &= health[column].isin(chosen)
    needle = search.strip().lower()
    if needle:
        mask &= health["supplier_id"].astype(str).str.lower().str.contains(needle, regex=False)
    return health.loc[mask, GRID_COLUMNS].reset_index(drop=True)


def risk_summary(health: pd.DataFrame) -> pd.DataFrame:
    """Suppliers and total MRR per risk level (healthy, at_risk, critical, then unscored when present):
    risk_level, suppliers (int), mrr (float, 0 when unknown)."""
    order = [*RISK_LEVELS, "unscored"]
    grouped = health.groupby("risk_level").agg(suppliers=("supplier_id", "size"),
                                               mrr=("mrr", lambda s: float(pd.to_numeric(s).fillna(0).sum())))
    out = grouped.reindex(order).fillna({"suppliers": 0, "mrr": 0.0})
    out = out.loc[(out.index != "unscored") | (out["suppliers"] > 0)]
    out["suppliers"] = out["suppliers"].astype(int)
    return out.rename_axis("risk_level").reset_index()


def biggest_declines(health: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` suppliers whose score fell most over 7 days (score_delta_7d < 0, most negative first):
    supplier_id, health_score, score_delta_7d, risk_level, drivers."""
    falling = health.loc[pd.to_numeric(health["score_delta_7d"]) < 0]
    return falling.sort_values(["score_delta_7d", "supplier_id"]).head(n)[
        ["supplier_id", "health_score", "score_delta_7d", "risk_level", "drivers"]
    ].reset_index(drop=True)


def _components(value) -> dict:
    if isinstance(value, str):
        return json.loads(value)
    return value or {}


def component_points(history: pd.DataFrame) -> pd.DataFrame:
    """Long form of the components of ``read_supplier_history``: as_of_date, component, points,
    max_points (points 0..weight; NaN when the component's data was missing)."""
    rows = [(day, name, part.get("points"), part.get("max_points"))
            for day, comps in zip(history["as_of_date"], history["components"])
            for name, part in _components(comps).items()]
    out = pd.DataFrame(rows, columns=["as_of_date", "component", "points", "max_points"])
    out[["points", "max_points"]] = out[["points", "max_points"]].astype(float)
    return out


def drivers_table(components) -> pd.DataFrame:
    """Which rule gave which points on one day: component, metric (the measured value), points,
    max_points, points_lost, missing; most points lost first."""
    rows = [(name, part.get("metric"), part.get("points"), part.get("max_points"), bool(part.get("missing")))
            for name, part in _components(components).items()]
    out = pd.DataFrame(rows, columns=["component", "metric", "points", "max_points", "missing"])
    out[["metric", "points", "max_points"]] = out[["metric", "points", "max_points"]].astype(float)
    out["points_lost"] = out["max_points"] - out["points"]
    return out.sort_values(["points_lost", "component"], ascending=[False, True], na_position="first")[
        ["component", "metric", "points", "max_points", "points_lost", "missing"]].reset_index(drop=True)


#: The report's columns, in the order the Interventions page shows them.
UPLIFT_COLUMNS = ["rule", "channel", "verdict", "treated", "control", "difference", "ci_low", "ci_high",
                  "cuped_difference", "cuped_ci_low", "cuped_ci_high", "treated_mean", "control_mean",
                  "treated_churn", "control_churn", "churn_difference", "contamination", "per_protocol_difference",
                  "required_treated", "required_control"]


def uplift_by_rule(outcomes: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The intention-to-treat uplift report of ``interventions.outcomes.uplift_table`` (one row per rule with
    channel ``all``, then per rule and channel), ``UPLIFT_COLUMNS``: difference in mean health score change
    (points, treated minus control) with its 95 % Welch interval, CUPED-adjusted, churn, contamination,
    per-protocol (secondary) and the cases needed to see 5 points at 80 % power."""
    from cs_pipeline.interventions.outcomes import uplift_table

    if outcomes.empty:
        return pd.DataFrame(columns=UPLIFT_COLUMNS)
    return uplift_table(outcomes, alpha)[UPLIFT_COLUMNS]


def calibration_frame(backtest: pd.DataFrame) -> pd.DataFrame:
    """Observed churn rate per score band and scorecard version: scorecard_version, band ("0-10" ...),
    band_low (int), churn_rate (0..1)."""
    cards = backtest.loc[backtest.get("kind", pd.Series("scorecard", index=backtest.index)) != "model"]
    rows = [(version, band, int(band.split("-")[0]), float(rate))
            for version, cal in zip(cards["scorecard_version"], cards["calibration"])
            for band, rate in _components(cal).items() if rate is not None]
    return pd.DataFrame(rows, columns=["scorecard_version", "band", "band_low", "churn_rate"]).sort_values(
        ["scorecard_version", "band_low"]).reset_index(drop=True)


def churn_by_level_frame(backtest: pd.DataFrame) -> pd.DataFrame:
    """Churn rate within the horizon per risk level and scorecard version: scorecard_version, risk_level,
    churn_rate (0..1, NaN when the level was empty)."""
    rows = [(version, level, np.nan if rate is None else float(rate))
            for version, by in zip(backtest["scorecard_version"], backtest["churn_rate_by_level"])
            for level, rate in _components(by).items()]
    return pd.DataFrame(rows, columns=["scorecard_version", "risk_level", "churn_rate"])


def grid_csv(grid: pd.DataFrame) -> bytes:
    """The grid as UTF-8 CSV bytes (header row, no index), as downloaded by "Export CSV"."""
    return grid.to_csv(index=False).encode("utf-8")
