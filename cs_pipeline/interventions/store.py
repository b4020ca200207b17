"""Reading what the intervention stage needs from the warehouse: the day's facts, who is due, the context
of the due suppliers and the intervention history the filters count. No writes.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.core.db import columns_of, read_frame, relation_exists
from cs_pipeline.interventions.churn_rule import rules_disabled
from cs_pipeline.interventions.planning import COUNTED_STATUSES, FACT_COLUMNS, newly_matching, previous_scored
from cs_pipeline.interventions.playbook import Playbook

FACTS_SQL = sql.SQL("""
SELECT h.supplier_id, h.as_of_date, h.risk_level, h.previous_risk_level, h.score_delta_7d::float8 AS score_delta_7d,
       h.score_delta_30d::float8 AS score_delta_30d, e.lifecycle_stage, e.days_since_onboarded,
       e.days_since_last_login, e.days_since_signup, e.status, {churn}
FROM marts.customer_health h
JOIN marts.supplier_engagement_daily e USING (supplier_id, as_of_date)
WHERE h.as_of_date BETWEEN %s AND %s
""")
#: The churn columns of FACTS_SQL, and their stand-in when customer_health predates them (issue 26).
CHURN_COLUMNS = sql.SQL("h.churn_probability::float8 AS churn_probability, h.churn_model_version, "
                        "h.churn_probability_7d_ago::float8 AS churn_probability_7d_ago")
NO_CHURN_COLUMNS = sql.SQL("NULL::float8 AS churn_probability, NULL::text AS churn_model_version, "
                           "NULL::float8 AS churn_probability_7d_ago")


def has_churn_columns(conn: psycopg.Connection) -> bool:
    """Whether marts.customer_health has the churn model's columns (``churn_probability`` and the newest,
    ``churn_probability_7d_ago``); a table written before them has not until it is re-materialised."""
    return {"churn_probability", "churn_probability_7d_ago"} <= columns_of(conn, "marts", "customer_health")


def latest_health_day(conn: psycopg.Connection) -> date | None:
    """The newest as_of_date in marts.customer_health (None when empty or missing)."""
    if not relation_exists(conn, "marts.customer_health"):
        return None
    return conn.execute("SELECT max(as_of_date) FROM marts.customer_health").fetchone()[0]


def uncelebrated(conn: psycopg.Connection, day: date, max_age_days: int = 7) -> pd.DataFrame:
    """Uncelebrated milestones achieved in the ``max_age_days`` days up to ``day``:
    supplier_id, milestone_type. A retracted one (``retracted_at`` set, issue 28) is never offered; a table
    from before that column (the health stage adds it when it next runs) has none."""
    columns = columns_of(conn, "marts", "success_milestones")
    if not columns:
        return pd.DataFrame(columns=["supplier_id", "milestone_type"])
    retracted = sql.SQL("AND retracted_at IS NULL") if "retracted_at" in columns else sql.SQL("")
    return read_frame(conn, sql.SQL("SELECT supplier_id, milestone_type FROM marts.success_milestones "
                                    "WHERE NOT celebrated {} AND achieved_at <= %s AND achieved_at > %s "
                                    "ORDER BY 1, 2").format(retracted),
                      (day, day - timedelta(days=max_age_days)))


def churn_model_scoring(conn: psycopg.Connection, day: date) -> tuple[str | None, str]:
    """(the churn model version that scored ``day`` in marts.customer_health, or None; why not when None).

    A model is active for the day when ops.churn_models holds a model and the day's rows carry a
    ``churn_probability`` (issue 26: the rules with ``requires: churn_model`` run only then)."""
    if not relation_exists(conn, "ops.churn_models") \
            or conn.execute("SELECT count(*) FROM ops.churn_models").fetchone()[0] == 0:
        return None, "no churn model trained (cs-pipeline model train)"
    if not has_churn_columns(conn):
        return None, "marts.customer_health has no churn_probability_7d_ago column yet (re-materialise it)"
    row = conn.execute("SELECT churn_model_version FROM marts.customer_health WHERE as_of_date = %s "
                       "AND churn_probability IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", (day,)).fetchone() \
        if relation_exists(conn, "marts.customer_health") else None
    if row is None:
        return None, f"no churn_probability in marts.customer_health on {day} (re-materialise the day to score it)"
    return row[0], ""


def disabled_rules(conn: psycopg.Connection, playbook: Playbook, day: date) -> dict[str, str]:
    """Rule name -> why it does not run on ``day`` (``planning.rules_disabled``; empty: every rule runs)."""
    if not any(r.requires for r in playbook.rules):
        return {}
    return rules_disabled(playbook, *churn_model_scoring(conn, day))


def read_facts(conn: psycopg.Connection, day: date, max_gap_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``FACT_COLUMNS`` rows of ``day``, each supplier's last scored row within ``max_gap_days`` before it),
    with the churn model's ``churn_probability`` and ``churn_probability_7d_ago`` (both scored by the same
    model when the day was scored: health's ``score_churn``)."""
    churn = has_churn_columns(conn)
    frame = read_frame(conn, FACTS_SQL.format(churn=CHURN_COLUMNS if churn else NO_CHURN_COLUMNS),
                       (day - timedelta(days=max_gap_days), day))
    if frame.empty:
        empty = pd.DataFrame(columns=FACT_COLUMNS)
        return empty, empty
    days = pd.to_datetime(frame["as_of_date"]).dt.date
    return frame.loc[days == day].reset_index(drop=True), previous_scored(frame, day, max_gap_days)


def due_suppliers(conn: psycopg.Connection, playbook: Playbook, day: date) -> dict[str, list[str]]:
    """Rule name -> supplier ids due for it on ``day`` (rules in priority order; see ``newly_matching``).
    Rules that cannot run on the day (``disabled_rules``: no churn model) are left out."""
    today, previous = read_facts(conn, day, playbook.transition_max_gap_days)
    disabled = disabled_rules(conn, playbook, day)
    due = {}
    for rule in sorted(playbook.rules, key=lambda r: -r.priority):
        if rule.name in disabled:
            continue
        milestones = uncelebrated(conn, day, rule.condition.milestone_max_age_days) \
            if rule.condition.milestone_achieved else None
        ids = newly_matching(rule, today, previous, milestones)
        if ids:
            due[rule.name] = ids
    return due


#: The context of the suppliers due on a day. Every CTE is MATERIALIZED and filtered to the due suppliers, and
#: the newest supplier snapshot is found once (a scalar subquery prunes raw.suppliers to one partition): the
#: planner cannot re-scan every daily partition per row, whatever its estimates (issue 18: 57 s for 300
#: suppliers after a backfill, before ANALYZE had run).
CONTEXT_SQL = """
WITH due AS MATERIALIZED (SELECT DISTINCT unnest(%(ids)s::text[]) AS supplier_id),
owners AS MATERIALIZED (
  SELECT s.supplier_id, s.email, s.business_name FROM raw.suppliers s JOIN due USING (supplier_id)
  WHERE s._partition_date = (SELECT max(_partition_date) FROM raw.suppliers)
),
least_adopted AS MATERIALIZED (
  SELECT DISTINCT ON (supplier_id) supplier_id, feature AS least_adopted_feature
  FROM marts.fct_feature_adoption JOIN due USING (supplier_id) WHERE is_core
  ORDER BY supplier_id, active_days_30d, uses_90d, feature
),
health AS MATERIALIZED (
  SELECT h.supplier_id, h.vendor_category, h.tier, h.health_score, h.risk_level, h.previous_risk_level, h.drivers
  FROM marts.customer_health h JOIN due USING (supplier_id) WHERE h.as_of_date = %(day)s
),
engagement AS MATERIALIZED (
  SELECT e.supplier_id, e.days_since_last_login, e.days_since_onboarded
  FROM marts.supplier_engagement_daily e JOIN due USING (supplier_id) WHERE e.as_of_date = %(day)s
),
dims AS MATERIALIZED (SELECT d.supplier_id, d.status FROM marts.dim_suppliers d JOIN due USING (supplier_id))
SELECT h.supplier_id, o.business_name, h.vendor_category, h.tier, d.status AS supplier_status,
       h.health_score::float8 AS health_score, h.risk_level, h.previous_risk_level, h.drivers,
       e.days_since_last_login, e.days_since_onboarded, la.least_adopted_feature, o.email
FROM health h
JOIN engagement e USING (supplier_id)
LEFT JOIN dims d USING (supplier_id)
LEFT JOIN least_adopted la USING (supplier_id)
LEFT JOIN owners o USING (supplier_id)
ORDER BY h.supplier_id
"""

#: Rows that count for caps and cooldowns: reserved, being retried or sent, and the control cases (identical
#: bookkeeping of both arms, issue 27; also for ``control_other_rule``). Expired rows count for nothing.
HISTORY_SQL = """
SELECT supplier_id, rule, channel, audience, as_of_date, status, reason FROM ops.interventions
WHERE as_of_date > %s AND (status = ANY(%s) OR (status = 'suppressed' AND reason = 'control'))
  AND coalesce(reason, '') <> 'invalid_email'
"""


def history(conn: psycopg.Connection, playbook: Playbook, day: date) -> pd.DataFrame:
    """The ``HISTORY_SQL`` rows of the window before ``day`` the filters look at (``apply_filters``'s ``sent``)."""
    window = max(playbook.cooldown_days, 7)
    return read_frame(conn, HISTORY_SQL, (day - timedelta(days=window), list(COUNTED_STATUSES)))

